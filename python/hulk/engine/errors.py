"""Errors raised by the task engine.

They subclass `hulk.errors.HulkError`, so `except HulkError` catches them with the native ones
(`QueueFull`, `BreakerOpen` ...). A timeout is also a `TimeoutError`, as asyncio's is.
"""

from __future__ import annotations

from typing import Any

from hulk.errors import HulkError

__all__ = [
    "ComponentFailed",
    "DuplicateTask",
    "EngineStopped",
    "IllegalTransition",
    "PayloadError",
    "TaskCancelled",
    "TaskFailed",
    "TaskInterrupted",
    "TaskNotFound",
    "TaskTimeout",
    "UnknownTaskType",
]


class UnknownTaskType(HulkError, LookupError):
    """No handler is registered under the task's type.

    Attributes:
        task_type: the type that was asked for.
    """

    def __init__(self, task_type: str) -> None:
        super().__init__(f"no handler registered for task type {task_type!r}")
        self.task_type = task_type


class PayloadError(HulkError, ValueError):
    """A payload (or a handler's result) is not JSON-serialisable, or is too large."""


class IllegalTransition(HulkError):
    """A task was asked to move between two statuses the transition table does not link.

    Attributes:
        task_id: the task's id.
        source: the status it is in (None for a task not yet submitted).
        target: the status it was asked to move to.
    """

    def __init__(self, task_id: str, source: str | None, target: str) -> None:
        super().__init__(f"task {task_id}: illegal transition {source} -> {target}")
        self.task_id = task_id
        self.source = source
        self.target = target


class TaskNotFound(HulkError, LookupError):
    """No task with this id is known (never submitted, or expired from the status store).

    Attributes:
        task_id: the id that was looked up.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class TaskTimeout(HulkError, TimeoutError):
    """An attempt ran longer than its task's timeout; recorded as the attempt's error."""


class TaskCancelled(HulkError):
    """A running attempt was cancelled on request; recorded as the cancelled task's error."""


class TaskInterrupted(HulkError):
    """A running attempt was cut short by a shutdown; the task is handed back for requeueing."""


class EngineStopped(HulkError):
    """The engine is draining or stopped and accepts no new task."""


class ComponentFailed(HulkError):
    """A component of a `Runtime` failed to start (or to stop) within its deadline.

    Attributes:
        component: the component's name.
    """

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"component {component!r}: {message}")
        self.component = component


class DuplicateTask(HulkError):
    """A task with this id is already live in the pool (submitted twice, e.g. a redelivered message).

    Attributes:
        task_id: the id.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} is already queued or running here")
        self.task_id = task_id


class TaskFailed(HulkError):
    """A task awaited for its result ended dead or cancelled.

    Attributes:
        task: a snapshot of the task's record (its `error` says why).
    """

    def __init__(self, task: Any) -> None:
        error = task.error
        why = f": {error.type}: {error.message}" if error is not None else ""
        super().__init__(f"task {task.id} ended {task.status}{why}")
        self.task = task
