"""What the HTTP layer needs from the runtime: one small protocol, so the API is testable alone.

The service bootstrap passes a real implementation backed by the engine (and NATS in service mode);
the HTTP code never imports the engine, messaging or cache modules directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from hulk.http.models import SubmitTask


class TaskBackend(Protocol):
    """The runtime operations behind the HTTP API.

    Errors are raised as `hulk.errors.HulkError` subclasses; `hulk.http.errors` maps them to status codes.
    """

    async def submit(self, request: SubmitTask, *, tenant: str, traceparent: str | None) -> Mapping[str, Any]:
        """Accepts one task; returns at least `id` and `status`."""
        ...

    async def get(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        """The task's current view, or None when unknown to this tenant."""
        ...

    async def wait(self, task_id: str, *, tenant: str, timeout: float) -> Mapping[str, Any] | None:
        """Waits up to `timeout` seconds for a terminal state; returns the latest view."""
        ...

    async def cancel(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        """Cancels a queued, scheduled or running task; returns the view, None when unknown."""
        ...

    async def list_dead(self, *, tenant: str | None, limit: int) -> Sequence[Mapping[str, Any]]:
        """Dead tasks, newest first; `tenant` None means every tenant (admin)."""
        ...

    async def replay(self, task_id: str, *, tenant: str | None) -> Mapping[str, Any] | None:
        """Submits a dead task again as a new task; None when unknown."""
        ...

    def runtime_info(self) -> Mapping[str, Any]:
        """Instance, version, workers, queue, breakers, cache, uptime."""
        ...

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        """Whether the instance should receive traffic, and the check that decided."""
        ...

    def breakers(self) -> Sequence[Mapping[str, Any]]:
        """Every named breaker with its state and metrics."""
        ...

    def reset_breaker(self, name: str) -> bool:
        """Closes a breaker; False when no breaker has that name."""
        ...

    def open_breaker(self, name: str) -> bool:
        """Forces a breaker open; False when no breaker has that name."""
        ...

    async def cache_stats(self) -> Mapping[str, Any]:
        """Cache statistics per level."""
        ...

    async def cache_flush(self, *, tenant: str | None) -> int:
        """Empties the cache (one tenant's namespace, or all); returns entries removed when known."""
        ...

    def set_log_level(self, level: str) -> None:
        """Changes the log level at run time."""
        ...

    async def drain(self) -> None:
        """Starts a graceful drain: readiness turns false, intake stops."""
        ...
