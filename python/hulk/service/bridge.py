"""The intake bridge: tasks fetched from JetStream become engine tasks, settled through their message.

`EngineIntake` is the messaging node's handler. Each delivery owns one of the node's slots from
fetch to settlement, and the node has exactly as many slots as the engine has workers, so the
native queue never holds more than the workers can start: backpressure runs end to end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any

from hulk._native import TaskMaker
from hulk.engine import DuplicateTask, EngineStopped, Hulk, Task, UnknownTaskType
from hulk.errors import QueueFull
from hulk.messaging.engine_adapters import EngineDelivery, NatsTaskStore
from hulk.messaging.intake import BatchItemDelivery, NatsDelivery

# A task per fetched message (a hundred per batch message): made in one native call.
_make_task = TaskMaker(Task).make

log = logging.getLogger("hulk.service")

TRACE_HEADERS = ("traceparent", "tracestate")
DUPLICATE_RETRY_DELAY = 5.0


class CancelledIds:
    """Ids cancelled cluster-wide before this instance saw them (bounded, oldest forgotten first)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, task_id: str) -> None:
        """Remembers `task_id` as cancelled."""
        self._ids[task_id] = None
        self._ids.move_to_end(task_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def pop(self, task_id: str) -> bool:
        """True (and forgets it) if `task_id` was cancelled."""
        if task_id in self._ids:
            del self._ids[task_id]
            return True
        return False


class EngineIntake:
    """The messaging node's handler: runs each fetched task on the engine's worker pool.

    Args:
        engine: the engine (started before the intake).
        cancelled: ids cancelled before they were fetched; such tasks are settled as cancelled.

    When the engine's status store is the KV store (`NatsTaskStore`), a finished task's message is
    acked only once its terminal record is stored (see `EngineDelivery`).
    """

    def __init__(self, engine: Hulk, cancelled: CancelledIds) -> None:
        self.engine = engine
        self.cancelled = cancelled
        self.gate = engine.store if isinstance(engine.store, NatsTaskStore) else None
        self._background: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def __call__(self, delivery: NatsDelivery) -> Awaitable[None] | None:
        """Submits one fetched task to the engine (on the event loop).

        A single message never waits: it owns a free worker slot. The tasks of a batch message
        share one slot, so when the queue is full the intake waits for room (an awaitable is
        returned) instead of re-publishing each task: backpressure, not churn.
        """
        envelope = delivery.task
        if self.cancelled.pop(envelope.id):
            self._spawn(delivery.ack())
            return None
        headers = envelope.headers
        trace = ({name: headers[name] for name in TRACE_HEADERS if name in headers} or None) if headers else None
        # `Task(type, payload, id=..., ...)`, made natively; a None timeout or max_retries leaves
        # the task type's own to the pool.
        task: Task = _make_task(
            envelope.type,
            envelope.payload,
            envelope.id,
            envelope.tenant,
            envelope.idempotency_key,
            envelope.max_retries,
            envelope.timeout,
            envelope.priority,
            trace,
            envelope.created_at,
        )
        # The pool counts the attempt it starts; earlier deliveries (crashes, naks) already spent some.
        task.attempt = delivery.attempt - 1
        try:
            self.engine.submit_task(task, EngineDelivery(delivery, self.gate))
        except UnknownTaskType:
            self._spawn(delivery.term("unknown task type", f"UnknownTaskType: no handler named {envelope.type!r}"))
        except DuplicateTask:
            # A redelivery of a task still running here (its ack wait ran out during a NATS outage):
            # the running copy settles it; asking again later loses nothing if that copy dies.
            self._spawn(delivery.nak(DUPLICATE_RETRY_DELAY))
        except QueueFull:
            if isinstance(delivery, BatchItemDelivery):
                return self._submit_when_room(task, delivery)
            # Another instance (or this one, later) takes it; no attempt is spent on our refusal.
            self._spawn(delivery.nak(0.1))
        except EngineStopped:
            self._spawn(delivery.nak(0.1))
        except Exception as exc:  # a task the engine refuses must never be lost or crash the intake
            log.exception("intake: engine refused task %s", envelope.id)
            self._spawn(delivery.term("refused by engine", f"{type(exc).__name__}: {exc}"))
        return None

    async def _submit_when_room(self, task: Task, delivery: NatsDelivery) -> None:
        """Submits a batch's task as soon as the queue has room (the batch's message waits meanwhile)."""
        while True:
            await self.engine.pool.wait_for_room()
            try:
                self.engine.submit_task(task, EngineDelivery(delivery, self.gate))
                return
            except QueueFull:
                continue  # another producer took the room first
            except EngineStopped:
                await delivery.nak(0.1)
                return

    async def wait(self) -> None:
        """Waits for settlements scheduled by the bridge itself."""
        while self._background:
            await asyncio.wait(set(self._background))
