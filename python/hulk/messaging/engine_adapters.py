"""The engine's plug points, implemented on NATS: event sink, status store, delivery.

The engine (`hulk.engine`) defines three small protocols and imports nothing from messaging; these
adapters implement them structurally (no import of the engine here either):

- `NatsEventSink.publish(events)`: the pool's batch of transitions `(task, previous, status, at)`,
  once per event-loop turn; grouped by kind and published as one batched event message per kind
  (`hulk.task.created`, `completed`, `failed`...) through the durable `EventPublisher`.
- `NatsTaskStore` (`record(events)`, `get`, `wait`, `dead`): the latest record of each task in the
  KV bucket, coalesced to the last state per batch, written behind through the outbox path.
- `EngineDelivery` (`on_retry(task, delay)`, `on_terminal(task)`): settles the NATS message of an
  externally delivered task; the calls are sync (the pool calls them on the loop) and schedule the
  ack / nak / term.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from hulk._native import distinct_tasks
from hulk.messaging.intake import NatsDelivery
from hulk.messaging.kvstore import RECORD_ENCODER, TERMINAL_STATUSES, NatsStatusStore
from hulk.messaging.publisher import EventPublisher

__all__ = ["EngineDelivery", "NatsEventSink", "NatsTaskStore", "event_kind_of"]

log = logging.getLogger("hulk.messaging")

_KIND_BY_STATUS = {
    "scheduled": "scheduled",
    "queued": "queued",
    "running": "started",
    "retrying": "retrying",
    "succeeded": "completed",
    "dead": "failed",
    "cancelled": "cancelled",
}


class TaskLike(Protocol):
    """What the adapters read of an engine task."""

    id: str
    type: str
    tenant: str
    attempt: int

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        ...


def event_kind_of(previous: object, status: object) -> str:
    """The event kind of a transition: "created" for a first submit, else by the new status."""
    if previous is None:
        return "created"
    # The engine's statuses are `StrEnum` members: they hash and compare as their strings, so the
    # table answers them without the (slow) enum `.value` property.
    kind = _KIND_BY_STATUS.get(status)  # type: ignore[call-overload]
    return kind if kind is not None else _KIND_BY_STATUS.get(str(getattr(status, "value", status)), "updated")


def _encode_events(events: Sequence[tuple[Any, Any, Any, float]]) -> dict[str, tuple[bytes, int]]:
    """`RecordEncoder.events` for tasks that are not engine tasks (same JSON, written by orjson)."""
    by_kind: dict[str, list[bytes]] = {}
    dumps = orjson.dumps
    for task, previous, status, at in events:
        kind = event_kind_of(previous, status)
        event: dict[str, Any] = {
            "task_id": task.id,
            "type": task.type,
            "tenant": task.tenant,
            "attempt": task.attempt,
            "at": at,
        }
        if kind == "retrying" or kind == "failed":
            error = getattr(task, "error", None)
            if error is not None:
                event["error"] = f"{error.type}: {error.message}"
        by_kind.setdefault(kind, []).append(dumps(event))
    return {kind: (b",".join(objects), len(objects)) for kind, objects in by_kind.items()}


class _Background:
    """Keeps strong references to fire-and-forget tasks and logs their failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("messaging background operation failed: %r", task.exception())

    async def wait(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))


class NatsEventSink:
    """The engine's `EventSink` on NATS: one batched event message per kind, every `linger` seconds.

    The pool hands over its transitions once per event-loop turn; under a trickle of tasks that is
    one transition per turn, so the sink lingers a moment and sends what gathered as one message
    per kind: a few publishes for a burst of tasks instead of three per task.

    Args:
        publisher: the durable event publisher.
        linger: seconds events may wait to be batched (0: one message per kind and pool batch).
    """

    def __init__(self, publisher: EventPublisher, *, linger: float = 0.005) -> None:
        if linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, got {linger}")
        self._publisher = publisher
        self._bg = _Background()
        self.linger = linger
        # Per kind: chunks of comma-separated JSON event objects, and how many events they hold.
        self._pending: dict[str, tuple[list[bytes], int]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def publish(self, events: Sequence[tuple[Any, Any, Any, float]]) -> None:
        """Takes one batch of transitions; publishes them in the background, in order."""
        try:
            # Engine tasks: each kind's event objects written natively in one pass.
            encoded = RECORD_ENCODER.events(events, _KIND_BY_STATUS)
        except TypeError:
            encoded = _encode_events(events)
        if not encoded:
            return
        pending = self._pending
        for kind, (objects, count) in encoded.items():
            batch = pending.get(kind)
            if batch is None:
                pending[kind] = [objects], count
            else:
                batch[0].append(objects)
                pending[kind] = batch[0], batch[1] + count
        if self.linger == 0:
            self._send_pending()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._send_pending)

    def _send_pending(self) -> None:
        self._timer = None
        if self._pending:
            by_kind, self._pending = self._pending, {}
            self._bg.spawn(self._send(by_kind))

    async def _send(self, by_kind: dict[str, tuple[list[bytes], int]]) -> None:
        for kind, (chunks, count) in by_kind.items():
            await self._publisher.emit_encoded(kind, b"[" + b",".join(chunks) + b"]", count)

    async def flush(self) -> None:
        """Sends what is lingering now and waits until every batch is published (or in the outbox)."""
        if self._timer is not None:
            self._timer.cancel()
        self._send_pending()
        await self._bg.wait()


class NatsTaskStore:
    """The engine's `StatusStore` on the JetStream KV bucket.

    Terminal records are written once per pool batch (all of a batch as one acknowledged group).
    A task's passing states (queued, running, retrying) are written only if the task still is in
    one `defer` seconds later: a task that finishes quickly costs one record write, not three, and
    a long one shows `running` within `defer` seconds. The first record of a task submitted over
    HTTP is written at submission, so `GET /v1/tasks/{id}` always finds it.

    Args:
        store: the KV store (with a publisher, so writes go through the outbox while NATS is down).
        task_factory: rebuilds an engine task from its record (`Task.from_dict`).
        dead_limit: how many recent dead task ids are kept in memory for `dead()`.
        defer: seconds a passing state waits before it is written (0: written at once).
    """

    def __init__(
        self,
        store: NatsStatusStore,
        task_factory: Callable[[dict[str, Any]], Any],
        *,
        dead_limit: int = 1000,
        defer: float = 0.05,
    ) -> None:
        if defer < 0:
            raise ValueError(f"defer must be >= 0 seconds, got {defer}")
        self._store = store
        self._factory = task_factory
        self._bg = _Background()
        self._dead: list[str] = []
        self._dead_limit = dead_limit
        self.defer = defer
        self._passing: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._held: dict[str, Callable[[], None]] = {}

    def settle_after_record(self, task_id: str, settle: Callable[[], None]) -> None:
        """Runs `settle` once the task's terminal record is stored (or safe in the local outbox).

        `EngineDelivery` acks (or terminates) a task's message through this, so a crash between
        the ack and the record cannot leave a task that ran with no final record anywhere. The
        pool settles a task before its batch of transitions is recorded, so the record that
        releases it is always still to come.
        """
        self._held[task_id] = settle

    def record(self, events: Sequence[tuple[Any, Any, Any, float]]) -> None:
        """Takes one batch of transitions; writes terminal records now and passing states later."""
        last: dict[str, Any] = {}
        # Each task once (natively, with no tuple per event); a newer object under the same id wins.
        for task in distinct_tasks(events):
            last[task.id] = task
        records = []
        terminal: list[str] = []
        passing = self._passing
        for task_id, task in last.items():
            status = _status_of(task)
            if status in TERMINAL_STATUSES:
                passing.pop(task_id, None)
                records.append(task)
                terminal.append(task_id)
                if status == "dead":
                    self._dead.append(task_id)
            elif self.defer == 0:
                records.append(task)
            else:
                passing[task_id] = task
        del self._dead[: max(0, len(self._dead) - self._dead_limit)]
        if records:
            self._bg.spawn(self._write(records, terminal))
        if passing and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.defer, self._write_passing)

    def _write_passing(self) -> None:
        """Writes the passing states of tasks that are still not terminal (the others wrote theirs)."""
        self._timer = None
        passing, self._passing = self._passing, {}
        if passing:
            self._bg.spawn(self._write(list(passing.values())))

    async def _write(self, tasks: list[Any], terminal: Sequence[str] = ()) -> None:
        # The records are written from the tasks as they are when this runs (a task may have
        # moved on since: its newer record is the one worth storing).
        try:
            safe = await self._store.put_tasks_nowait(tasks)
            if safe is not None:
                await safe
        finally:
            # Released even if the write raised: a message left unacked is redelivered and run
            # again, but one held here forever would hold its intake slot forever.
            held = self._held
            for task_id in terminal:
                settle = held.pop(task_id, None)
                if settle is not None:
                    try:
                        settle()
                    except Exception:
                        # One settlement failing must not leave the others of the group unsettled.
                        log.exception("settling task %s after its record failed", task_id)

    async def get(self, task_id: str) -> Any | None:
        """The task's latest record (any instance wrote it), or None."""
        rec = await self._store.get(task_id)
        return None if rec is None else self._factory(rec)

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """Waits until the task is terminal (succeeded, dead or cancelled) and returns it.

        Raises:
            TimeoutError: not terminal within `timeout` seconds.
        """
        return self._factory(await self._store.wait(task_id, timeout=timeout))

    async def dead(self, limit: int = 100) -> list[Any]:
        """The most recent tasks this instance saw die, newest first."""
        out = []
        for task_id in reversed(self._dead[-limit:]):
            rec = await self._store.get(task_id)
            if rec is not None and rec.get("status") in TERMINAL_STATUSES:
                out.append(self._factory(rec))
        return out

    async def flush(self) -> None:
        """Writes the deferred passing states now and waits until every record is written (or in the outbox)."""
        if self._timer is not None:
            self._timer.cancel()
        self._write_passing()
        await self._bg.wait()


_STATUS_TEXT = {status: status for status in ("scheduled", "queued", "running", "retrying", *TERMINAL_STATUSES)}


def _status_of(task: Any) -> str:
    status = task.status
    # A `StrEnum` member finds its plain string here (hashes are equal) without `.value`.
    text = _STATUS_TEXT.get(status)
    return text if text is not None else str(getattr(status, "value", status))


class EngineDelivery:
    """The engine's `Delivery` for a task fetched from NATS: ack on success, term when dead, nak to retry.

    Args:
        delivery: the fetched message's delivery.
    """

    __slots__ = ("delivery", "gate")

    _shared = _Background()

    def __init__(self, delivery: NatsDelivery, gate: NatsTaskStore | None = None) -> None:
        self.delivery = delivery
        self.gate = gate

    def on_retry(self, task: Any, delay: float) -> None:
        """The task runs again after `delay` seconds: nak with that delay (any instance may run it)."""
        self._shared.spawn(self.delivery.nak(delay))

    def on_terminal(self, task: Any) -> None:
        """The task is succeeded or cancelled (ack) or dead (dead letter with its error, then term).

        With a `gate` (the status store), the message is settled only once the task's terminal
        record is stored: until then the server still holds the task for redelivery.
        """
        if self.gate is None:
            self._settle_terminal(task)
        else:
            self.gate.settle_after_record(task.id, functools.partial(self._settle_terminal, task))

    def _settle_terminal(self, task: Any) -> None:
        if _status_of(task) == "dead":
            error = getattr(task, "error", None)
            text = None if error is None else f"{error.type}: {error.message}"
            self._shared.spawn(self.delivery.term("retries exhausted", text))
        else:
            self.delivery.ack_nowait()

    async def in_progress(self) -> None:
        """Progress ack (the intake's loop already sends them for held deliveries)."""
        await self.delivery.in_progress()
