"""arq on Redis: the worker through `arq`, with max_jobs raised, the poll delay lowered, no results kept.

Configured as arq's documentation allows for throughput (its defaults cap it near 200 tasks/s):
- `max_jobs = 256` (default 10): jobs run at once;
- `poll_delay = 0.01` s (default 0.5 s): how long the worker sleeps between reads of the queue;
- `keep_result = 0`: no result written back (the no-op returns nothing anyone reads);
- `arq`'s own logger at WARNING (`--custom-log-dict`): at the CLI's default INFO it logs two lines
  per job;
- the event loop is uvloop (the bench sets the policy when the settings module is imported, since
  the `arq` command uses plain `asyncio.run`).

arq keeps a job in its queue until the job has run (an in-progress key guards it meanwhile), so a
worker that dies mid-job leaves it for another: the equivalent of acking after execution.

The producer calls `await pool.enqueue_job("noop", i)`, 256 in flight.

Run: .venv/bin/python -m bench.peers.arq_peer --tasks 20000
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings

from bench.peers.harness import PeerSpec, TaskCounter, env_url, in_windows, main, mark_ready

MAX_JOBS = 256
POLL_DELAY = 0.01
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"level": "WARNING", "class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}
counter = TaskCounter()


async def noop(ctx: dict[str, Any], n: int) -> None:
    counter.tick()


async def _ready(ctx: dict[str, Any]) -> None:
    mark_ready()


class WorkerSettings:
    """Read by `arq bench.peers.arq_peer.WorkerSettings`."""

    functions: ClassVar[list[Any]] = [noop]
    redis_settings = RedisSettings.from_dsn(env_url() or "redis://127.0.0.1:1")
    max_jobs = MAX_JOBS
    poll_delay = POLL_DELAY
    keep_result = 0
    on_startup = _ready


async def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    pool = await create_pool(RedisSettings.from_dsn(url))

    async def submit(i: int) -> object:
        return await pool.enqueue_job("noop", i)

    mark_start()
    await in_windows(n, window, submit)
    await pool.aclose()


def worker_argv() -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from bench.peers.harness import use_uvloop; use_uvloop(); from arq.cli import cli; "
        "sys.argv[0] = 'arq'; cli()",
        "bench.peers.arq_peer.WorkerSettings",
        "--custom-log-dict",
        "bench.peers.arq_peer.LOG_CONFIG",
    ]


SPEC = PeerSpec(
    name="arq",
    module="bench.peers.arq_peer",
    server="redis",
    packages=("arq", "redis"),
    config={
        "worker": f"arq WorkerSettings: max_jobs={MAX_JOBS} (default 10), poll_delay={POLL_DELAY} (default 0.5), "
        "keep_result=0, arq logger at WARNING, uvloop, one process",
        "ack": "the job leaves the queue after it ran (in-progress key while running)",
        "producer": "await pool.enqueue_job('noop', i), 256 in flight",
    },
    worker_argv=worker_argv,
    produce=produce,
    durable="in Redis memory (no persistence configured); leaves the queue after execution",
)

if __name__ == "__main__":
    main(SPEC)
