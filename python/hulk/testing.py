"""Helpers for testing code that uses hulk: a fake clock and an in-memory runtime.

Like `structlog.testing`, this is public API for users' own tests::

    from hulk.testing import InMemoryRuntime

    async def test_send(app):                  # your app, with its handlers registered
        async with InMemoryRuntime(app) as rt:
            task = rt.submit("email.send", {"to": "a@example.org"})
            await rt.settle()
            assert rt.history(task.id) == ["queued", "running", "succeeded"]
            await rt.advance(30)               # fake time: due retries run, deadlines expire

The runtime uses a `FakeClock` and no background timer: time moves only when the test calls
`advance`, so deadlines, retry times and execution order are reproducible.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from hulk.engine.app import Hulk
from hulk.engine.config import EngineConfig
from hulk.engine.events import MemoryEventSink
from hulk.engine.ids import IdGenerator
from hulk.engine.pool import DrainResult, WorkerPool
from hulk.engine.registry import Registry
from hulk.engine.store import InMemoryStatusStore
from hulk.engine.task import Task

__all__ = ["FakeClock", "InMemoryRuntime"]


class FakeClock:
    """A clock that moves only when told to (implements `hulk.engine.Clock`).

    Args:
        start: the initial monotonic reading, in seconds.
        wall: the Unix time matching `start`.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._offset = wall - start

    def monotonic(self) -> float:
        """The current fake monotonic time."""
        return self._now

    def wall_offset(self) -> float:
        """Constant: the fake wall clock moves with the monotonic one."""
        return self._offset

    def time(self) -> float:
        """The current fake Unix time."""
        return self._now + self._offset

    def advance(self, seconds: float) -> None:
        """Moves time forward by `seconds` (>= 0)."""
        if not seconds >= 0:
            raise ValueError(f"FakeClock.advance(seconds) must be >= 0, got {seconds!r}")
        self._now += seconds


class InMemoryRuntime:
    """A `Hulk` engine for tests: fake clock, fixed seeds, no timer, recorded events.

    Args:
        app: an app whose handlers (registry) to use; None: a new registry with the built-ins.
        config: settings to start from (default: 4 workers); `tick_interval` is forced to None and
            `seed` to `seed`.
        seed: seed of ids, backoff jitter and breakers.
        clock: the clock (default: a new `FakeClock`).
        **overrides: `EngineConfig` fields to replace, e.g. `queue_size=2`.
    """

    def __init__(
        self,
        app: Hulk | None = None,
        *,
        config: EngineConfig | None = None,
        seed: int = 0,
        clock: FakeClock | None = None,
        **overrides: Any,
    ) -> None:
        base = config or (app.config if app is not None else EngineConfig(workers=4))
        self.config = dataclasses.replace(base, tick_interval=None, seed=seed, **overrides)
        self.clock = clock if clock is not None else FakeClock()
        self.events = MemoryEventSink(maxlen=None)
        registry = app.registry if app is not None else Registry()
        self.store = InMemoryStatusStore(self.config.store_capacity, self.config.store_ttl, clock=self.clock)
        clock_ref = self.clock
        self.app = Hulk(
            self.config,
            registry=registry,
            clock=self.clock,
            store=self.store,
            events=self.events,
            ids=IdGenerator(seed=seed, time_ns=lambda: int(clock_ref.time() * 1e9)),
        )
        if app is not None:
            self.app.pool.on_dead.extend(app.pool.on_dead)
        self.drained: DrainResult | None = None

    @property
    def pool(self) -> WorkerPool:
        """The engine's worker pool."""
        return self.app.pool

    async def __aenter__(self) -> InMemoryRuntime:
        await self.app.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.drained = await self.app.stop(0.0)

    def submit(self, type: str, payload: Any = None, **options: Any) -> Task:
        """Submits a task (see `Hulk.submit`)."""
        return self.app.submit(type, payload, **options)

    async def settle(self, *, quiet_turns: int = 5, max_turns: int = 100_000) -> None:
        """Runs the event loop until the pool is quiet: no transition for `quiet_turns` loop turns.

        Tasks blocked on something outside the loop (a thread, an event the test holds) stay
        running, and tasks queued behind them stay queued; wait for those with `wait`.

        Raises:
            RuntimeError: still busy after `max_turns` loop turns.
        """
        pool = self.app.pool
        quiet = 0
        seen = -1
        for _ in range(max_turns):
            pool.flush()
            count = len(self.events.events)
            if count == seen:
                quiet += 1
                if quiet >= quiet_turns:
                    return
            else:
                quiet = 0
            seen = count
            await asyncio.sleep(0)
        raise RuntimeError(f"the pool did not settle within {max_turns} event-loop turns")

    async def advance(self, seconds: float) -> None:
        """Moves the fake clock, runs one tick (timeouts, due retries, health) and settles."""
        self.clock.advance(seconds)
        self.app.pool.tick()
        await self.settle()

    async def wait(self, task_id: str, timeout: float = 10.0) -> Task:
        """Waits for the task to be terminal (real seconds); returns its snapshot."""
        return await self.app.wait(task_id, timeout)

    def history(self, task_id: str) -> list[str]:
        """The statuses the task went through, as strings, from the recorded events."""
        self.app.pool.flush()
        return [str(status) for status in self.events.history(task_id)]

    def get(self, task_id: str) -> Task | None:
        """The task's current record (live or stored), without copying."""
        return self.app.pool.get(task_id) or self.store.peek(task_id)
