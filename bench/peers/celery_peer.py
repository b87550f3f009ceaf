"""Celery on Redis: acks_late, no results, a deep prefetch, the worker through `celery worker`.

Configured as Celery's documentation ("Optimizing") recommends for many short tasks:
- `task_acks_late = True`: the message is acked after the task ran (Celery's default acks on
  receipt, which loses the task if the worker dies mid-task; every peer here acks after execution);
- `task_ignore_result = True`: no result backend traffic;
- `worker_prefetch_multiplier = 64`: a deep prefetch for short tasks (default 4);
- `celery worker --pool POOL --without-gossip --without-mingle --without-heartbeat --loglevel WARNING`:
  one worker (see POOL below), no cluster chatter, no per-task INFO log lines.

POOL: `--pool threads -c 8`, the pool Celery's documentation points to for I/O-bound work (a no-op
task is all overhead, no CPU work). Measured here with 1,000 tasks: prefork with one child (Celery's
default pool) 114 tasks/s, threads 197, solo 204 (no concurrency at all, not a production setting).
`HULK_PEER_CELERY_POOL=prefork|threads|solo` picks another.

The producer calls `noop.delay(i)` from 4 threads (Celery's client is synchronous).

Run: .venv/bin/python -m bench.peers.celery_peer --tasks 20000
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from bench.peers.harness import PeerSpec, TaskCounter, env_url, in_threads, main, mark_ready

POOL = os.environ.get("HULK_PEER_CELERY_POOL", "threads")
CONCURRENCY = {"prefork": 1, "threads": 8, "solo": 1}[POOL]
PREFETCH_MULTIPLIER = 64
SEND_THREADS = 4

app = Celery("bench", broker=env_url() or "redis://127.0.0.1:1")
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
counter = TaskCounter()


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(n: int) -> None:
    counter.tick()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**kwargs: Any) -> None:
    mark_ready()


def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    mark_start()
    in_threads(n, SEND_THREADS, noop.delay)


def worker_argv() -> list[str]:
    return [
        *(sys.executable, "-m", "celery", "-A", "bench.peers.celery_peer", "worker"),
        *("--pool", POOL, "-c", str(CONCURRENCY)),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"),
    ]


SPEC = PeerSpec(
    name="celery",
    module="bench.peers.celery_peer",
    server="redis",
    packages=("celery", "kombu", "redis"),
    config={
        "app": f"task_acks_late=True, task_ignore_result=True, worker_prefetch_multiplier={PREFETCH_MULTIPLIER}",
        "worker": f"celery worker --pool {POOL} -c {CONCURRENCY} --without-gossip --without-mingle "
        "--without-heartbeat --loglevel WARNING",
        "ack": "late: after the task ran (task_acks_late=True)",
        "producer": f"noop.delay(i) from {SEND_THREADS} threads (synchronous client)",
    },
    worker_argv=worker_argv,
    produce=produce,
    durable="in Redis memory (no persistence configured); acked after execution (acks_late)",
)

if __name__ == "__main__":
    main(SPEC)
