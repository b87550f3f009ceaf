"""Stopping the cache's background tasks without ever hanging the shutdown."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger("hulk.cache")


async def stop_task(task: asyncio.Task[None] | None, *, timeout: float = 2.0) -> None:
    """Cancels `task` and waits up to `timeout` seconds for it to end.

    A client library may swallow the cancellation of a call in flight (redis-py can, inside a
    pipeline), which would leave a plain `await task` waiting forever; here the wait is bounded and a
    task that does not end is reported and left behind.
    """
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("cache.task_stuck", task=task.get_name(), timeout=timeout)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("cache.task_failed", task=task.get_name(), error=repr(task.exception()))
