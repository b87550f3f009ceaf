"""The user-facing engine object: register handlers, start, submit, query, cancel, stop.

Example:
    >>> import asyncio
    >>> from hulk.engine import Hulk
    >>> app = Hulk()
    >>> @app.task("add", timeout=5, retries=2)
    ... async def add(payload):
    ...     return payload["a"] + payload["b"]
    >>> async def main():
    ...     async with app:
    ...         task = app.submit("add", {"a": 1, "b": 2})
    ...         return (await app.wait(task.id, timeout=5)).result
    >>> asyncio.run(main())
    3
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from hulk.engine.builtins import register_builtins
from hulk.engine.clock import Clock, SystemClock
from hulk.engine.config import BackoffPolicy, BreakerPolicy, EngineConfig
from hulk.engine.errors import TaskFailed
from hulk.engine.events import EventSink, NullEventSink
from hulk.engine.ids import IdGenerator
from hulk.engine.lifecycle import Component, Health, Runtime
from hulk.engine.metrics import EngineMetrics
from hulk.engine.pool import CacheLike, Delivery, DrainResult, WorkerPool
from hulk.engine.registry import Executor, Registry
from hulk.engine.store import InMemoryStatusStore, StatusStore
from hulk.engine.task import Task, TaskStatus

__all__ = ["Hulk", "run"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` on uvloop when it is installed, else on asyncio's default loop.

    Args:
        main: the coroutine to run to completion.

    Returns:
        Its result.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    return uvloop.run(main)


class Hulk:
    """A task engine in this process: handlers, worker pool, status store, events and life cycle.

    Args:
        config: engine settings (default: `EngineConfig()`).
        registry: handlers to use (default: a new registry; see also `task`).
        clock: time source (tests pass `hulk.testing.FakeClock`).
        store: status store (default: an in-memory one bounded by `store_capacity` and `store_ttl`).
        events: event sink for every transition (default: none).
        ids: id generator (default: UUIDv7 seeded from `config.seed`).
        builtins: register the `echo`, `sleep`, `fail` and `cpu` handlers.
        modules: handler modules to load by import path, after `config.handlers` (see `Registry.load`).
        cache: the runtime's cache (any `CacheLike`, e.g. a started `hulk.cache.Cache`): handlers
            get their tenant's namespace from `hulk.context.cache()`, and task types declared with
            `cache_ttl` reuse results through it (None: no cache, cacheable types just run).
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        registry: Registry | None = None,
        clock: Clock | None = None,
        store: StatusStore | None = None,
        events: EventSink | None = None,
        ids: IdGenerator | None = None,
        builtins: bool = True,
        modules: Iterable[str] = (),
        cache: CacheLike | None = None,
    ) -> None:
        self.config = config = config if config is not None else EngineConfig()
        self.registry = registry if registry is not None else Registry()
        if builtins:
            register_builtins(self.registry)
        for path in (*config.handlers, *modules):
            self.registry.load(path)
        self.clock = clock if clock is not None else SystemClock()
        self.store: StatusStore = (
            store
            if store is not None
            else InMemoryStatusStore(config.store_capacity, config.store_ttl, clock=self.clock)
        )
        self.events: EventSink = events if events is not None else NullEventSink()
        self.cache = cache
        self.metrics = EngineMetrics()
        self.pool = WorkerPool(
            self.registry,
            config,
            clock=self.clock,
            store=self.store,
            events=self.events,
            metrics=self.metrics,
            ids=ids,
            cache=cache,
        )
        if isinstance(self.store, InMemoryStatusStore) and self.store.live is None:
            self.store.live = self.pool.get
        self.runtime = Runtime(stop_timeout=config.drain_timeout)
        if isinstance(self.store, Component):
            self.runtime.add(self.store)
            self.runtime.add(self.pool, after=[self.store.name])
        else:
            self.runtime.add(self.pool)
        self._started = False
        if type(self).submit is Hulk.submit:
            # The hot path: an instance attribute skips one call layer (`submit` below documents
            # it); a subclass that overrides `submit` keeps its own.
            self.submit = self.pool.submit_payload  # type: ignore[method-assign]

    # --- registration -------------------------------------------------------------------------

    def task(
        self,
        name: str | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: BackoffPolicy | None = None,
        breaker: str | BreakerPolicy | bool | None = None,
        concurrency: int | None = None,
        executor: Executor | None = None,
        cache_ttl: float | None = None,
    ) -> Callable[[F], F]:
        """Decorator registering a handler (see `Registry.register` for the options).

        Example:
            >>> app = Hulk()
            >>> @app.task("email.send", timeout=10, retries=5, breaker="smtp", concurrency=8)
            ... async def send(payload):
            ...     ...
        """
        return self.registry.task(
            name,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            breaker=breaker,
            concurrency=concurrency,
            executor=executor,
            cache_ttl=cache_ttl,
        )

    def breaker(self, name: str, policy: BreakerPolicy | None = None) -> str:
        """Declares a named breaker shared by the handlers that name it; returns `name`."""
        return self.registry.breaker(name, policy)

    def load(self, *paths: str) -> None:
        """Loads handler modules by import path ("pkg.tasks" or "pkg.tasks:app")."""
        for path in paths:
            self.registry.load(path)

    def on_dead(self, hook: F) -> F:
        """Decorator adding a dead-letter hook: called with each task that turns dead.

        The hook runs on the event loop and may be a coroutine function.
        """
        self.pool.on_dead.append(hook)
        return hook

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the runtime's components (the worker pool and any added with `runtime.add`)."""
        await self.runtime.start()
        self._started = True

    async def stop(self, timeout: float | None = None) -> DrainResult:
        """Drains and stops everything, in reverse start order.

        Args:
            timeout: seconds running tasks may take to finish (None: `drain_timeout`).

        Returns:
            The pool's drain result: the tasks to requeue.
        """
        results = await self.runtime.stop(timeout)
        self._started = False
        outcome = results.get(self.pool.name)
        return outcome if isinstance(outcome, DrainResult) else DrainResult(finished_in_time=False)

    async def __aenter__(self) -> Hulk:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def ready(self) -> bool:
        """True when every component is started and ready."""
        return self.runtime.ready()

    def health(self) -> dict[str, Health]:
        """Health of each component by name."""
        return self.runtime.health()

    # --- tasks --------------------------------------------------------------------------------

    def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        delay: float | None = None,
        tenant: str = "default",
        idempotency_key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        trace: dict[str, str] | None = None,
    ) -> Task:
        """Submits a task; returns its (live, read-only) record at once.

        Args:
            type: the handler name.
            payload: JSON-serialisable input.
            delay: seconds before it is queued (status `scheduled` meanwhile).
            tenant: owning tenant.
            idempotency_key: a second submit with the same (tenant, key) returns the first task
                while the store still knows it.
            retries: attempts after the first one (None: the handler's default).
            timeout: seconds one attempt may run (None: the handler's default).
            priority: carried for the intake layer.
            trace: W3C trace context to carry.

        Raises:
            QueueFull: the queue is full: retry later (HTTP 429).
            UnknownTaskType: no handler named `type`.
            PayloadError: the payload is not JSON-serialisable or too large.
            EngineStopped: the engine is draining or stopped.
        """
        return self.pool.submit_payload(
            type,
            payload,
            delay=delay,
            tenant=tenant,
            idempotency_key=idempotency_key,
            retries=retries,
            timeout=timeout,
            priority=priority,
            trace=trace,
        )

    def submit_many(
        self,
        type: str,
        payloads: Sequence[Any],
        *,
        tenant: str = "default",
        retries: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        trace: dict[str, str] | None = None,
    ) -> list[Task]:
        """Submits one task of `type` per payload in one call (see `WorkerPool.submit_many`).

        Returns:
            The accepted tasks, a prefix of `payloads` (shorter when the queue filled up).

        Raises:
            QueueFull: the queue is full before the first task.
            PayloadError, UnknownTaskType, EngineStopped: as `submit`; nothing is accepted.
        """
        return self.pool.submit_many(
            type, payloads, tenant=tenant, retries=retries, timeout=timeout, priority=priority, trace=trace
        )

    def submit_task(self, task: Task, delivery: Delivery | None = None, *, delay: float | None = None) -> Task:
        """Submits a prepared task (the messaging layer's path; the payload is not re-checked).

        Raises:
            The same errors as `submit`, plus DuplicateTask when a live task has the same id.
        """
        return self.pool.submit(task, delivery, delay=delay)

    async def get(self, task_id: str) -> Task | None:
        """A snapshot of the task's record, or None when unknown (or expired from the store)."""
        live = self.pool.get(task_id)
        if live is not None:
            return live.snapshot()
        return await self.store.get(task_id)

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Waits until the task is terminal; returns a snapshot of its record.

        Raises:
            TaskNotFound: the id is unknown.
            TimeoutError: still not terminal after `timeout` seconds.
        """
        self.pool.flush()
        return await self.store.wait(task_id, timeout)

    def cancel(self, task_id: str) -> bool:
        """Cancels a queued, delayed, retrying or running task (see `WorkerPool.cancel`).

        Returns:
            True if the task was live and is (being) cancelled.
        """
        return self.pool.cancel(task_id)

    async def dead(self, limit: int = 100) -> list[Task]:
        """The most recent dead tasks, newest first (from the status store)."""
        self.pool.flush()
        return await self.store.dead(limit)

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Waits for the task and returns its result.

        Raises:
            TaskNotFound: the id is unknown.
            TimeoutError: not terminal in time.
            TaskFailed: it ended dead or cancelled (its `task.error` says why).
        """
        task = await self.wait(task_id, timeout)
        if task.status is TaskStatus.SUCCEEDED:
            return task.result
        raise TaskFailed(task)

    def metrics_snapshot(self) -> dict[str, Any]:
        """Native counters, histograms and gauges of the engine (for a metrics collector)."""
        return self.pool.metrics_snapshot()

    async def call(self, type: str, payload: Any = None, *, timeout: float | None = None, **options: Any) -> Any:
        """Submits a task and waits for its result (a convenience for scripts and tests)."""
        task = self.submit(type, payload, **options)
        return await self.result(task.id, timeout)
