"""The task engine of hulk: usable in-process, with no NATS, Redis or HTTP.

`Hulk` is the entry point: register handlers with `@app.task(...)`, start it (`async with app`),
`submit` tasks, then `get`, `wait`, `cancel` them or list the dead ones. The messaging, cache,
observability and HTTP layers plug in through small protocols defined here: `EventSink`,
`StatusStore`, `Delivery`, `Component` and `CacheLike` (the runtime's cache, for `hulk.context` and
task types declared with `cache_ttl`).
"""

from hulk.engine.app import Hulk, run
from hulk.engine.clock import Clock, SystemClock
from hulk.engine.config import BackoffPolicy, BreakerPolicy, EngineConfig
from hulk.engine.errors import (
    ComponentFailed,
    DuplicateTask,
    EngineStopped,
    IllegalTransition,
    PayloadError,
    TaskCancelled,
    TaskFailed,
    TaskInterrupted,
    TaskNotFound,
    TaskTimeout,
    UnknownTaskType,
)
from hulk.engine.events import EventSink, FanoutSink, MemoryEventSink, NullEventSink, TaskEvent, event_kind
from hulk.engine.ids import IdGenerator
from hulk.engine.lifecycle import Component, Health, Runtime
from hulk.engine.metrics import EngineMetrics, TypeMetrics
from hulk.engine.pool import CacheLike, CacheNamespaceLike, Delivery, DrainResult, WorkerPool
from hulk.engine.registry import Registry, TaskSpec, task
from hulk.engine.store import InMemoryStatusStore, StatusStore
from hulk.engine.task import TERMINAL, TRANSITIONS, Task, TaskError, TaskStatus, can_transition

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "BackoffPolicy",
    "BreakerPolicy",
    "CacheLike",
    "CacheNamespaceLike",
    "Clock",
    "Component",
    "ComponentFailed",
    "Delivery",
    "DrainResult",
    "DuplicateTask",
    "EngineConfig",
    "EngineMetrics",
    "EngineStopped",
    "EventSink",
    "FanoutSink",
    "Health",
    "Hulk",
    "IdGenerator",
    "IllegalTransition",
    "InMemoryStatusStore",
    "MemoryEventSink",
    "NullEventSink",
    "PayloadError",
    "Registry",
    "Runtime",
    "StatusStore",
    "SystemClock",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskInterrupted",
    "TaskNotFound",
    "TaskSpec",
    "TaskStatus",
    "TaskTimeout",
    "TypeMetrics",
    "UnknownTaskType",
    "WorkerPool",
    "can_transition",
    "event_kind",
    "run",
    "task",
]
