"""Dramatiq on Redis: the worker through `dramatiq`, one process, 8 threads, a deeper prefetch.

Configured as Dramatiq's documentation recommends for throughput:
- `dramatiq --processes 1 --threads 8`: one worker process like every peer here, Dramatiq's
  default 8 worker threads;
- `dramatiq_queue_prefetch=256` (environment): messages each process holds ahead of its threads
  (default threads × 2 = 16), so the threads are not starved by round trips to Redis;
- the default middleware stack (age limit, time limit, retries, callbacks, pipelines, shutdown
  notifications), as a user gets it.

Dramatiq acks a message after the actor returns (its only mode), so a worker that dies mid-task
leaves the message to be requeued.

The producer calls `noop.send(i)` from 4 threads (Dramatiq's client is synchronous).

Run: .venv/bin/python -m bench.peers.dramatiq_peer --tasks 20000
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from bench.peers.harness import PeerSpec, TaskCounter, env_url, in_threads, main, mark_ready

THREADS = 8
PREFETCH = 256
SEND_THREADS = 4


class _Ready(Middleware):
    """Tells the bench the worker consumes."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        mark_ready()


broker = RedisBroker(url=env_url() or "redis://127.0.0.1:1")  # type: ignore[no-untyped-call]
broker.add_middleware(_Ready())
dramatiq.set_broker(broker)
counter = TaskCounter()


@dramatiq.actor(actor_name="noop")
def noop(n: int) -> None:
    counter.tick()


def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    mark_start()
    in_threads(n, SEND_THREADS, noop.send)


def worker_argv() -> list[str]:
    dramatiq_cli = [sys.executable, "-m", "dramatiq", "bench.peers.dramatiq_peer"]
    return ["env", f"dramatiq_queue_prefetch={PREFETCH}", *dramatiq_cli, "--processes", "1", "--threads", str(THREADS)]


SPEC = PeerSpec(
    name="dramatiq",
    module="bench.peers.dramatiq_peer",
    server="redis",
    packages=("dramatiq", "redis"),
    config={
        "worker": f"dramatiq --processes 1 --threads {THREADS}, dramatiq_queue_prefetch={PREFETCH}, default middleware",
        "ack": "after the actor returns (Dramatiq's only mode)",
        "producer": f"noop.send(i) from {SEND_THREADS} threads (synchronous client)",
    },
    worker_argv=worker_argv,
    produce=produce,
    durable="in Redis memory (no persistence configured); acked after execution",
)

if __name__ == "__main__":
    main(SPEC)
