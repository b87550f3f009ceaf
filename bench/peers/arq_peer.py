"""arq on Redis: a Worker with max_jobs raised, the poll delay lowered, no results kept, on uvloop.

Configured as arq's documentation allows for throughput (its defaults cap it near 200 tasks/s):
- `max_jobs = 256` (default 10): jobs run at once;
- `poll_delay = 0.01` s (default 0.5 s): how long the worker sleeps between reads of the queue;
- `keep_result = 0`: no result written back (the no-op returns nothing anyone reads);
- no per-job log line (the `arq` command logs two per job at INFO; the worker here is started with
  `Worker(...).async_run()`, arq's documented programmatic entry point, with logging left at
  WARNING);
- the event loop is uvloop, like every asyncio process in the bench.

arq keeps a job in its queue until the job has run (an in-progress key guards it meanwhile), so a
worker that dies mid-job leaves it for another: the equivalent of acking after execution.

The producer calls `await pool.enqueue_job("noop", i)`, 256 in flight.

arq 0.28 pins redis-py < 6 while hulk needs >= 6, so arq runs from its own virtual environment
(`bench.peers.venvs`, created on first use); the whole pair, harness included, runs there.

Run: $(.venv/bin/python -m bench.peers.venvs) -m bench.peers.arq_peer --tasks 3000
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from arq import Worker, create_pool
from arq.connections import RedisSettings

from bench.peers.harness import PeerSpec, TaskCounter, env_url, in_windows, main, mark_ready, python_worker

MAX_JOBS = 256
POLL_DELAY = 0.01
counter = TaskCounter()


async def noop(ctx: dict[str, Any], n: int) -> None:
    counter.tick()


async def _ready(ctx: dict[str, Any]) -> None:
    mark_ready()


async def work() -> None:
    worker = Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(env_url()),
        max_jobs=MAX_JOBS,
        poll_delay=POLL_DELAY,
        keep_result=0,
        on_startup=_ready,
        handle_signals=False,
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()


async def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    pool = await create_pool(RedisSettings.from_dsn(url))

    async def submit(i: int) -> object:
        return await pool.enqueue_job("noop", i)

    mark_start()
    await in_windows(n, window, submit)
    await pool.aclose()


SPEC = PeerSpec(
    name="arq",
    module="bench.peers.arq_peer",
    server="redis",
    packages=("arq", "redis"),
    config={
        "worker": f"arq WorkerSettings: max_jobs={MAX_JOBS} (default 10), poll_delay={POLL_DELAY} (default 0.5), "
        "keep_result=0, no per-job log line, uvloop, one process (Worker(...).async_run())",
        "ack": "the job leaves the queue after it ran (in-progress key while running)",
        "producer": "await pool.enqueue_job('noop', i), 256 in flight",
    },
    worker_argv=lambda: python_worker("bench.peers.arq_peer"),
    work=work,
    produce=produce,
    durable="in Redis memory (no persistence configured); leaves the queue after execution",
)

if __name__ == "__main__":
    main(SPEC)
