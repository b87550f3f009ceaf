"""Task transitions as events, delivered in batches to one `EventSink`.

Every status change is one `TaskEvent`. The pool appends events to a buffer on the hot path and
hands the whole buffer to the sink once per event-loop turn (and on every tick), so a sink costs
one call per batch, not one per transition. The batch is a `hulk._native.EventBatch`: a
read-only sequence whose `(task, previous, status, at)` tuples are made when read (the buffer
holds no tuple per event); it is never reused, so a sink may keep it. The messaging layer's sink
publishes them (`hulk.task.created` / `completed` / `failed` ...); the engine itself knows
nothing of NATS.

An event's task is the live record: by the time the sink sees a batch the task may have moved on
(a `created` event's task may already be `succeeded`). The event's own fields say what happened;
for a terminal event the task's fields are final.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import structlog

from hulk._native import EventBatch
from hulk.engine.task import TaskStatus

if TYPE_CHECKING:
    from hulk.engine.task import Task

__all__ = ["EventSink", "FanoutSink", "MemoryEventSink", "NullEventSink", "TaskEvent", "event_kind"]

_log = structlog.get_logger("hulk.engine.events")

# The pool's batches are native sequences: `isinstance(batch, Sequence)` holds, as the protocol says.
Sequence.register(EventBatch)

_KINDS: dict[TaskStatus, str] = {
    TaskStatus.SCHEDULED: "scheduled",
    TaskStatus.QUEUED: "queued",
    TaskStatus.RUNNING: "started",
    TaskStatus.RETRYING: "retrying",
    TaskStatus.SUCCEEDED: "completed",
    TaskStatus.DEAD: "failed",
    TaskStatus.CANCELLED: "cancelled",
}


def event_kind(previous: TaskStatus | None, status: TaskStatus) -> str:
    """Names a transition for subjects and logs.

    Returns:
        "created" for a first submit; otherwise "scheduled", "queued", "started", "retrying",
        "completed" (succeeded), "failed" (dead) or "cancelled".
    """
    if previous is None:
        return "created"
    return _KINDS[status]


TaskEvent: TypeAlias = tuple["Task", TaskStatus | None, TaskStatus, float]
"""One status change of one task: ``(task, previous, status, at)``.

- ``task``: the live task record;
- ``previous``: the status it left (None for a first submit);
- ``status``: the status it entered;
- ``at``: Unix time of the change.

A plain tuple rather than a named one: cheap to make when a sink reads it, and unpacked the
obvious way: ``for task, previous, status, at in events``.
"""


@runtime_checkable
class EventSink(Protocol):
    """Receives batches of transitions, in order.

    `publish` is called on the event loop and must not block: a sink doing I/O buffers the batch
    and sends it from its own task. An exception is logged and the batch dropped for that sink only.
    """

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Takes one batch of events (the sequence is not reused by the caller afterwards)."""
        ...


class NullEventSink:
    """Drops every event (the default when nothing listens)."""

    __slots__ = ()

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Ignores the batch."""


class MemoryEventSink:
    """Keeps the most recent events in memory, for tests and demos.

    Args:
        maxlen: events kept (the oldest go first); None keeps all.
    """

    def __init__(self, maxlen: int | None = 100_000) -> None:
        self.events: deque[TaskEvent] = deque(maxlen=maxlen)
        self.batches = 0

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Appends the batch."""
        self.batches += 1
        self.events.extend(events)

    def history(self, task_id: str) -> list[TaskStatus]:
        """The statuses `task_id` went through, in order (from the kept events)."""
        return [status for task, _previous, status, _at in self.events if task.id == task_id]

    def kinds(self, task_id: str) -> list[str]:
        """The transition names of `task_id`, in order (e.g. ["created", "started", "completed"])."""
        return [event_kind(previous, status) for task, previous, status, _at in self.events if task.id == task_id]

    def clear(self) -> None:
        """Forgets every kept event."""
        self.events.clear()


class FanoutSink:
    """Hands every batch to several sinks in turn.

    Args:
        sinks: the sinks, called in order.
    """

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = tuple(sinks)

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Publishes the batch to each sink; one sink's error does not keep the batch from the others."""
        for sink in self.sinks:
            try:
                sink.publish(events)
            except Exception:
                _log.exception("event_sink_failed", sink=type(sink).__name__, events=len(events))
