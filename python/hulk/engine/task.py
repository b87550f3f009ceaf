"""The task model: statuses, the transition table and the task record.

A task moves through these statuses (spelled exactly so in events, stores and the HTTP API)::

    (new) ──> scheduled ──> queued ──> running ──> succeeded
                  ^           │ ^         │
                  └───────────┘ │         ├──> retrying ──> queued ...
               (breaker open)   │         ├──> dead       (retries exhausted: dead-letter hook)
                                │         └──> cancelled
                       (re-intake of a handed-back task)

`scheduled`, `queued` and `retrying` can also move to `cancelled`, and `queued` to `dead` (a breaker
configured to fail fast). `succeeded`, `dead` and `cancelled` are terminal. Any other move raises
`IllegalTransition`; every legal move is one `TaskEvent` (see `hulk.engine.events`).
"""

from __future__ import annotations

import traceback as _traceback
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hulk.engine.errors import IllegalTransition

__all__ = ["TERMINAL", "TRANSITIONS", "Task", "TaskError", "TaskStatus", "can_transition"]


class TaskStatus(StrEnum):
    """Where a task stands; the values are the exact wire spellings."""

    SCHEDULED = "scheduled"
    """Waiting for a due time (a delayed task, or one held back while its breaker is open)."""
    QUEUED = "queued"
    """In the worker pool's queue, waiting for a free worker."""
    RUNNING = "running"
    """A worker is running an attempt."""
    RETRYING = "retrying"
    """An attempt failed or timed out and another is due after a backoff delay."""
    SUCCEEDED = "succeeded"
    """Terminal: an attempt returned a result."""
    DEAD = "dead"
    """Terminal: retries exhausted (or a fail-fast breaker refused it); handed to the dead-letter hook."""
    CANCELLED = "cancelled"
    """Terminal: cancelled on request."""


S = TaskStatus

TERMINAL: frozenset[TaskStatus] = frozenset({S.SUCCEEDED, S.DEAD, S.CANCELLED})
"""The statuses a task never leaves."""

TRANSITIONS: Mapping[TaskStatus | None, frozenset[TaskStatus]] = {
    None: frozenset({S.SCHEDULED, S.QUEUED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.QUEUED, S.RUNNING, S.SCHEDULED, S.DEAD, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.RETRYING, S.DEAD, S.CANCELLED}),
    S.RETRYING: frozenset({S.QUEUED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.DEAD: frozenset(),
    S.CANCELLED: frozenset(),
}
"""For each status (None: not yet submitted), the statuses it may move to."""


def can_transition(source: TaskStatus | None, target: TaskStatus) -> bool:
    """Tells whether the transition table allows `source -> target`."""
    return target in TRANSITIONS[source]


_TRACEBACK_FRAMES = 5
_TRACEBACK_CHARS = 2000
_MESSAGE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why an attempt failed: the exception's type name, its message and a short traceback.

    Attributes:
        type: the exception class name, e.g. "ValueError" or "TaskTimeout".
        message: `str(exception)`, cut to 1,000 characters.
        traceback: the last few frames, formatted and cut to 2,000 characters ("" when none).
    """

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskError:
        """Describes `exc` (its class name, message and last five frames)."""
        tb = ""
        if exc.__traceback__ is not None:
            lines = _traceback.format_exception(exc, limit=-_TRACEBACK_FRAMES, chain=False)
            tb = "".join(lines)[-_TRACEBACK_CHARS:]
        return cls(type(exc).__name__, str(exc)[:_MESSAGE_CHARS], tb)

    def to_dict(self) -> dict[str, str]:
        """The error as a JSON-ready dict."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskError:
        """Rebuilds an error from `to_dict()`'s output."""
        return cls(str(data["type"]), str(data.get("message", "")), str(data.get("traceback", "")))


class Task:
    """One unit of work and its record: identity, payload, limits, status, times and outcome.

    The engine creates tasks in `Hulk.submit`; the messaging layer rebuilds them with `from_dict`.
    The record is owned by the engine while the task is live: read it, do not assign to it.

    Args:
        type: the registered handler name, e.g. "email.send".
        payload: JSON-serialisable input for the handler.
        id: a sortable unique id (UUIDv7 string); the engine assigns one when empty.
        tenant: the tenant the task belongs to.
        idempotency_key: submits with the same (tenant, key) return the first task.
        max_retries: attempts after the first one (None: the handler's default).
        timeout: seconds one attempt may run (None: the handler's default).
        priority: carried for the intake layer (higher is more urgent); the in-process pool is FIFO.
        trace: W3C trace context (`traceparent`, `tracestate`), carried untouched.
        created_at: Unix time of creation (0.0: set on submit).
    """

    __slots__ = (
        "_delivery",
        "_rt",
        "_sched",
        "attempt",
        "cached",
        "created_at",
        "error",
        "finished_at",
        "id",
        "idempotency_key",
        "max_retries",
        "payload",
        "priority",
        "queued_at",
        "result",
        "run_at",
        "started_at",
        "status",
        "tenant",
        "timeout",
        "trace",
        "type",
    )

    id: str
    """Sortable unique id (UUIDv7 string)."""
    type: str
    """Handler name."""
    payload: Any
    """JSON-serialisable input."""
    tenant: str
    """Owning tenant."""
    idempotency_key: str | None
    """Deduplication key within the tenant."""
    attempt: int
    """Attempts started so far (1 during the first run)."""
    max_retries: int | None
    """Attempts allowed after the first one (resolved from the handler on submit)."""
    timeout: float | None
    """Seconds one attempt may run (resolved from the handler on submit)."""
    priority: int
    """Higher is more urgent (see the class docs)."""
    status: TaskStatus | None
    """Current status (None until submitted)."""
    created_at: float
    """Unix time of creation."""
    queued_at: float | None
    """Unix time it last entered the queue."""
    started_at: float | None
    """Unix time the last attempt started."""
    finished_at: float | None
    """Unix time it reached a terminal status (or its last attempt ended)."""
    run_at: float | None
    """Unix time a scheduled or retrying task is due."""
    trace: dict[str, str] | None
    """W3C trace context."""
    result: Any
    """The handler's return value once succeeded."""
    error: TaskError | None
    """The last attempt's error (kept after a successful retry is cleared)."""
    cached: bool
    """True when the result came from the cache without running the handler (a cacheable type)."""
    _rt: Any
    _delivery: Any
    _sched: Any

    def __init__(
        self,
        type: str,
        payload: Any = None,
        *,
        id: str = "",
        tenant: str = "default",
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        trace: dict[str, str] | None = None,
        created_at: float = 0.0,
    ) -> None:
        self.id = id
        self.type = type
        self.payload = payload
        self.tenant = tenant
        self.idempotency_key = idempotency_key
        self.attempt = 0
        self.max_retries = max_retries
        self.timeout = timeout
        self.priority = priority
        self.status = None
        self.created_at = created_at
        self.queued_at = None
        self.started_at = None
        self.finished_at = None
        self.run_at = None
        self.trace = trace
        self.result = None
        self.error = None
        self.cached = False
        self._rt = None
        self._delivery = None
        self._sched = None

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.type} {self.status} attempt={self.attempt}>"

    @property
    def done(self) -> bool:
        """True once the task is in a terminal status."""
        return self.status in TERMINAL

    @property
    def timed_out(self) -> bool:
        """True when the last attempt's error is a timeout."""
        return self.error is not None and self.error.type == "TaskTimeout"

    def transition(self, target: TaskStatus) -> TaskStatus | None:
        """Moves to `target` if the transition table allows it.

        Args:
            target: the new status.

        Returns:
            The previous status.

        Raises:
            IllegalTransition: the table does not allow the move; the task is unchanged.
        """
        source = self.status
        if target not in TRANSITIONS[source]:
            raise IllegalTransition(self.id, source, target)
        self.status = target
        return source

    _FIELDS = (
        "id",
        "type",
        "payload",
        "tenant",
        "idempotency_key",
        "attempt",
        "max_retries",
        "timeout",
        "priority",
        "status",
        "created_at",
        "queued_at",
        "started_at",
        "finished_at",
        "run_at",
        "trace",
        "result",
        "cached",
    )

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (status as its string, error as a dict or None)."""
        # A dict display (sized once, no tuples): this runs once per task on the status-store path,
        # and it is twice as fast as `dict(zip(_FIELDS, ...))`. The status is looked up, not read
        # through the enum's `.value` property. Keys and order are `_FIELDS`, then "error".
        error = self.error
        return {
            "id": self.id,
            "type": self.type,
            "payload": self.payload,
            "tenant": self.tenant,
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "priority": self.priority,
            "status": _STATUS_TEXT[self.status],
            "created_at": self.created_at,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "run_at": self.run_at,
            "trace": self.trace,
            "result": self.result,
            "cached": self.cached,
            "error": None if error is None else error.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Rebuilds a task from `to_dict()`'s output (unknown keys are ignored).

        Raises:
            ValueError: a status that is not one of `TaskStatus`.
        """
        task = cls(str(data["type"]), data.get("payload"))
        for name in Task._FIELDS:
            if name in data and name not in ("type", "payload"):
                setattr(task, name, data[name])
        status = data.get("status")
        task.status = None if status is None else TaskStatus(status)
        error = data.get("error")
        task.error = None if error is None else TaskError.from_dict(error)
        if task.trace is not None:
            task.trace = dict(task.trace)
        return task

    def snapshot(self) -> Task:
        """A detached copy of the public fields (what stores hand out, so callers cannot alter live records)."""
        copy = Task.__new__(Task)
        for name in Task._FIELDS:
            setattr(copy, name, getattr(self, name))
        copy.error = self.error
        copy._rt = None
        copy._delivery = None
        copy._sched = None
        return copy


_STATUS_TEXT: dict[TaskStatus | None, str | None] = {None: None, **{status: status.value for status in TaskStatus}}
