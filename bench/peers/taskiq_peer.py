"""Taskiq on NATS JetStream (taskiq-nats' pull-based broker), batch fetches, worker through `taskiq worker`.

Configured as taskiq's and taskiq-nats' documentation recommend for throughput:
- `PullBasedJetStreamBroker(pull_consume_batch=256)`: without it the broker fetches one message
  per pull request (its default batch is 1);
- `taskiq worker --workers 1 --max-async-tasks 256 --max-prefetch 256`: one worker process (like
  every peer here) running up to 256 tasks at once with 256 more prefetched;
- a durable consumer on a work-queue stream (file storage); taskiq acks when the result is saved
  (its default `--ack-type when_saved`; there is no result backend, so right after execution).

The producer calls `await noop.kiq(i)` (taskiq-nats' `kick` awaits the stream's acknowledgement),
256 in flight.

Run: .venv/bin/python -m bench.peers.taskiq_peer --tasks 20000
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from taskiq import TaskiqEvents, TaskiqState
from taskiq_nats import PullBasedJetStreamBroker

from bench.peers.harness import PeerSpec, TaskCounter, env_url, in_windows, main, mark_ready

SUBJECT, STREAM, DURABLE = "bench.tasks", "BENCH", "workers"
BATCH = 256
ASYNC_TASKS = 256

broker = PullBasedJetStreamBroker(
    env_url() or "nats://127.0.0.1:1",
    subject=SUBJECT,
    stream_name=STREAM,
    durable=DURABLE,
    stream_config=StreamConfig(
        name=STREAM, subjects=[SUBJECT], retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE
    ),
    pull_consume_batch=BATCH,
    # taskiq-nats 0.7 catches nats.errors.TimeoutError, but nats-py 2.16's fetch raises the plain
    # asyncio.TimeoutError when a pull finds nothing: the worker process dies and taskiq restarts it
    # a second later. A long pull timeout keeps that from happening while the bench waits for tasks.
    pull_consume_timeout=60.0,
)
counter = TaskCounter()


@broker.task(task_name="bench.noop")
async def noop(n: int) -> None:
    counter.tick()


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _ready(state: TaskiqState) -> None:
    mark_ready()


async def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    await broker.startup()

    async def submit(i: int) -> object:
        return await noop.kiq(i)

    mark_start()
    await in_windows(n, window, submit)
    await broker.shutdown()


def worker_argv() -> list[str]:
    taskiq = [sys.executable, "-m", "taskiq", "worker", "bench.peers.taskiq_peer:broker"]
    limits = ["--max-async-tasks", str(ASYNC_TASKS), "--max-prefetch", str(ASYNC_TASKS)]
    return [*taskiq, "--workers", "1", *limits, "--log-level", "WARNING"]


SPEC = PeerSpec(
    name="taskiq",
    module="bench.peers.taskiq_peer",
    server="nats",
    packages=("taskiq", "taskiq-nats", "nats-py"),
    config={
        "broker": f"PullBasedJetStreamBroker(pull_consume_batch={BATCH}, pull_consume_timeout=60.0), "
        "work-queue stream (file), durable pull consumer",
        "worker": f"taskiq worker --workers 1 --max-async-tasks {ASYNC_TASKS} --max-prefetch {ASYNC_TASKS} "
        "--log-level WARNING (uvloop, as taskiq picks it when installed)",
        "ack": "when_saved (taskiq's default; no result backend, so after execution)",
        "producer": "await noop.kiq(i) (awaits the stream ack), 256 in flight",
    },
    worker_argv=worker_argv,
    produce=produce,
    durable="stored in a file-backed stream before kiq returns; acked after execution",
    notes=(
        "pull_consume_timeout 60 s: with taskiq-nats 0.7 and nats-py 2.16 an empty pull kills the worker "
        "process (an uncaught asyncio.TimeoutError), so the bench keeps pulls from timing out",
    ),
)

if __name__ == "__main__":
    main(SPEC)
