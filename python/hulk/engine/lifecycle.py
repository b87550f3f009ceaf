"""Component life cycle: one small protocol, and a `Runtime` that starts and stops components in order.

Every long-lived part (worker pool, scheduler, consumers, cache tiers, the HTTP server) is a
`Component`: `start()`, `ready()`, `stop(timeout)` (drain, then stop) and `health()`. A `Runtime`
starts them in dependency order and stops them in reverse, each within its own deadline, and
answers health for all of them.

Example:
    >>> runtime = Runtime()
    >>> runtime.add(pool)                       # doctest: +SKIP
    >>> runtime.add(server, after=["pool"])     # doctest: +SKIP
    >>> await runtime.start()                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import structlog

from hulk.engine.errors import ComponentFailed

__all__ = ["Component", "Health", "HealthStatus", "Runtime"]

HealthStatus = Literal["starting", "ok", "degraded", "failing", "stopped"]

_log = structlog.get_logger("hulk.engine.lifecycle")


@dataclass(frozen=True, slots=True)
class Health:
    """A component's health.

    Attributes:
        status: "starting", "ok", "degraded" (working, with a problem to report), "failing" or "stopped".
        detail: figures and reasons (JSON-ready).
    """

    status: HealthStatus
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the component works ("ok" or "degraded")."""
        return self.status in ("ok", "degraded")


@runtime_checkable
class Component(Protocol):
    """A long-lived part of the runtime."""

    @property
    def name(self) -> str:
        """Unique name within a runtime; other components name it in `after`."""
        ...

    async def start(self) -> None:
        """Starts; returns once the component can serve, raises if it cannot."""
        ...

    def ready(self) -> bool:
        """Whether it serves now (readiness; may turn False later, e.g. while overloaded)."""
        ...

    async def stop(self, timeout: float) -> object:
        """Stops taking work, finishes what it can within `timeout` seconds, then releases everything.

        Returns:
            What it hands back to the caller (the pool returns its not-started tasks), or None.
        """
        ...

    def health(self) -> Health:
        """Its health now (cheap: called by probes)."""
        ...


@dataclass(slots=True)
class _Entry:
    component: Component
    after: tuple[str, ...]
    start_timeout: float
    stop_timeout: float
    state: Literal["new", "starting", "started", "stopping", "stopped", "failed"] = "new"
    error: str | None = None


class Runtime:
    """Starts components in dependency order, stops them in reverse, each within its deadline.

    Args:
        start_timeout: default seconds a component may take to start.
        stop_timeout: default seconds a component may take to stop (passed to its `stop`).
        stop_grace: extra seconds allowed beyond `stop_timeout` before the runtime gives up on it.
    """

    def __init__(self, *, start_timeout: float = 30.0, stop_timeout: float = 30.0, stop_grace: float = 1.0) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.stop_grace = stop_grace
        self._entries: dict[str, _Entry] = {}
        self._started: list[_Entry] = []

    def add(
        self,
        component: Component,
        *,
        after: Iterable[str] = (),
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> Component:
        """Adds a component, to start after the named ones (which must be added too, in any order).

        Returns:
            `component`.

        Raises:
            ValueError: a component with that name is already there.
        """
        name = component.name
        if name in self._entries:
            raise ValueError(f"a component named {name!r} is already in the runtime")
        self._entries[name] = _Entry(
            component,
            tuple(after),
            self.start_timeout if start_timeout is None else start_timeout,
            self.stop_timeout if stop_timeout is None else stop_timeout,
        )
        return component

    def get(self, name: str) -> Component:
        """The component named `name` (KeyError if absent)."""
        return self._entries[name].component

    def order(self) -> list[str]:
        """Component names in start order: dependencies first, otherwise in the order added.

        Raises:
            ValueError: an `after` names an unknown component, or the dependencies form a cycle.
        """
        for name, entry in self._entries.items():
            for dep in entry.after:
                if dep not in self._entries:
                    raise ValueError(f"component {name!r} starts after unknown component {dep!r}")
        done: list[str] = []
        placed: set[str] = set()
        pending = list(self._entries)
        while pending:
            for name in pending:
                if all(dep in placed for dep in self._entries[name].after):
                    done.append(name)
                    placed.add(name)
                    pending.remove(name)
                    break
            else:
                raise ValueError(f"components depend on each other in a cycle: {sorted(pending)}")
        return done

    async def start(self) -> None:
        """Starts every component in order, each within its start deadline.

        Raises:
            ComponentFailed: one did not start in time or raised; the ones already started are
                stopped again (in reverse) before this is raised.
        """
        for name in self.order():
            entry = self._entries[name]
            if entry.state == "started":
                continue
            entry.state = "starting"
            try:
                async with asyncio.timeout(entry.start_timeout):
                    await entry.component.start()
            except Exception as exc:
                entry.state = "failed"
                entry.error = f"start failed: {type(exc).__name__}: {exc}"
                _log.error("component_start_failed", component=name, error=entry.error)
                await self.stop()
                if isinstance(exc, TimeoutError):
                    raise ComponentFailed(name, f"did not start within {entry.start_timeout}s") from exc
                raise ComponentFailed(name, entry.error) from exc
            entry.state = "started"
            self._started.append(entry)

    async def stop(self, timeout: float | None = None) -> dict[str, object]:
        """Stops the started components in reverse order, each within its deadline.

        Args:
            timeout: seconds each component may take (None: the one it was added with).

        A component that overruns its deadline or raises is recorded as failed (see `health`) and
        the others are still stopped.

        Returns:
            What each component's `stop` returned, by name (None for those that failed).
        """
        results: dict[str, object] = {}
        while self._started:
            entry = self._started.pop()
            name = entry.component.name
            entry.state = "stopping"
            began = time.monotonic()
            limit = entry.stop_timeout if timeout is None else timeout
            try:
                async with asyncio.timeout(limit + self.stop_grace):
                    results[name] = await entry.component.stop(limit)
            except Exception as exc:
                entry.state = "failed"
                if isinstance(exc, TimeoutError):
                    entry.error = f"did not stop within {limit}s"
                else:
                    entry.error = f"stop failed: {type(exc).__name__}: {exc}"
                _log.error("component_stop_failed", component=name, error=entry.error)
                results[name] = None
                continue
            entry.state = "stopped"
            _log.info("component_stopped", component=name, seconds=round(time.monotonic() - began, 3))
        return results

    def ready(self) -> bool:
        """True when every component is started and ready."""
        return bool(self._entries) and all(
            entry.state == "started" and entry.component.ready() for entry in self._entries.values()
        )

    def health(self) -> dict[str, Health]:
        """Each component's health by name ("starting"/"stopped"/"failing" while not running)."""
        out: dict[str, Health] = {}
        for name, entry in self._entries.items():
            if entry.state == "started":
                try:
                    out[name] = entry.component.health()
                except Exception as exc:
                    out[name] = Health("failing", {"error": f"health failed: {type(exc).__name__}: {exc}"})
            elif entry.state == "failed":
                out[name] = Health("failing", {"error": entry.error})
            elif entry.state == "stopped":
                out[name] = Health("stopped")
            else:
                out[name] = Health("starting")
        return out

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
