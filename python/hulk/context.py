"""The task context: what a running handler can ask the runtime for without extra parameters.

Example:
    >>> from hulk import context
    >>> from hulk.engine import Hulk
    >>> app = Hulk()
    >>> @app.task("report.build")
    ... async def build(payload):
    ...     task = context.current_task()          # the running task's (read-only) record
    ...     cache = context.cache()                # the tenant's cache namespace, or None
    ...     if cache is not None:
    ...         await cache.set(f"last:{task.type}", payload, 60)
    ...     return {"tenant": task.tenant, "attempt": task.attempt}

Both work in coroutine handlers, in sync handlers (they run in a thread with a copy of the worker's
context) and in asyncio tasks a handler creates; not in `executor="process"` handlers, which run in
another process. The context is carried by two `contextvars.ContextVar`s: the worker pool sets the
cache once per worker and the task once per attempt (one set/reset pair).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hulk.engine.pool import CacheLike, CacheNamespaceLike
    from hulk.engine.task import Task

__all__ = ["cache", "current_task"]

current_task_var: ContextVar[Task | None] = ContextVar("hulk_current_task", default=None)
"""The task whose attempt is running in this context (set by the worker pool, not by handlers)."""

runtime_cache_var: ContextVar[CacheLike | None] = ContextVar("hulk_runtime_cache", default=None)
"""The cache of the runtime running this context (set by the worker pool, not by handlers)."""


def current_task() -> Task:
    """The task whose handler is running: its live record, to read and never to assign to.

    Raises:
        LookupError: no task attempt is running in this context.
    """
    task = current_task_var.get()
    if task is None:
        raise LookupError("no hulk task is running in this context")
    return task


def cache() -> CacheNamespaceLike | None:
    """The cache namespace of the running task's tenant, or None when the runtime has no cache.

    With `hulk serve` (or `Hulk(cache=hulk.cache.Cache(...))`) it is a `hulk.cache.CacheNamespace`:
    keys never reach another tenant's entries.

    Raises:
        LookupError: no task attempt is running in this context.
        ValueError: the tenant is not a valid cache namespace name.
    """
    task = current_task()
    runtime_cache = runtime_cache_var.get()
    if runtime_cache is None:
        return None
    return runtime_cache.namespace(task.tenant)
