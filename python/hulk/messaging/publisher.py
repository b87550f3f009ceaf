"""Publishing to JetStream: tasks (producers get errors) and events (never lost: outbox fallback).

`TaskProducer.submit` publishes a task to its intake subject with `Nats-Msg-Id` set to the
idempotency key and waits for the stream's acknowledgement: a duplicate is reported, a full intake
stream raises `IntakeFull` (backpressure reaches the producer).

`EventPublisher` publishes task transitions, ticks and heartbeats. Publishes are pipelined
(`publish_async`), their acknowledgements are awaited by one reaper task in order; anything that
fails or is not acknowledged in time, and anything produced while disconnected, goes to the local
outbox, which is replayed in order once NATS is back. While the outbox holds anything, new events
are appended behind it, so order is kept. Every event carries a `Nats-Msg-Id`, so a replayed event
whose first publish did reach the server is dropped as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from nats.errors import Error as NatsError
from nats.js.api import PubAck
from nats.js.errors import APIError

from hulk.errors import HulkError
from hulk.messaging.connection import NatsConnection
from hulk.messaging.envelope import HDR_MSG_ID, TaskEnvelope
from hulk.messaging.outbox import Outbox, OutboxEntry
from hulk.messaging.streams import event_subject, intake_subject
from hulk.observability import tracing as _tracing

__all__ = ["EventPublisher", "IntakeFull", "SubmitResult", "TaskProducer"]

log = logging.getLogger("hulk.messaging")


class IntakeFull(HulkError):
    """The intake stream is full (discard-new): the task was not accepted."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What the intake stream said about a submitted task."""

    task_id: str
    seq: int
    duplicate: bool


class TaskProducer:
    """Submits tasks to the intake stream.

    Args:
        conn: the NATS connection.
        timeout: seconds to wait for the stream's acknowledgement.

    """

    def __init__(self, conn: NatsConnection, *, timeout: float = 5.0) -> None:
        self._conn = conn
        self._timeout = timeout

    # nats-py's publish_async loses a stream error (its reply handler raises instead of failing
    # the future), so submissions use request/reply publishes, run concurrently.
    async def submit(self, task: TaskEnvelope) -> SubmitResult:
        """Publishes `task` and waits for the stream to store it.

        Raises:
            IntakeFull: the intake stream refused it (full).
            nats.errors.TimeoutError: no acknowledgement in time (the task may or may not be stored;
                submitting it again with the same idempotency key is safe).

        """
        try:
            ack = await self._conn.js.publish(
                intake_subject(task.type), task.body(), timeout=self._timeout, headers=task.to_headers()
            )
        except APIError as exc:
            if exc.err_code in (10077, 10047) or "maximum" in str(exc.description or "").lower():
                raise IntakeFull(f"intake stream is full: {exc.description}") from exc
            raise
        return SubmitResult(task.id, ack.seq, bool(ack.duplicate))

    async def submit_many(self, tasks: list[TaskEnvelope], *, window: int = 1000) -> list[SubmitResult]:
        """Publishes many tasks concurrently (at most `window` unacknowledged); results in order.

        Raises:
            IntakeFull: one of them was refused (others may be stored).

        """
        results: list[SubmitResult] = []
        for start in range(0, len(tasks), window):
            chunk = tasks[start : start + window]
            results.extend(await asyncio.gather(*(self.submit(t) for t in chunk)))
        return results


class EventPublisher:
    """Publishes events to JetStream; falls back to a durable local outbox; replays it in order.

    Args:
        conn: the NATS connection.
        outbox: the local outbox (events are held in memory-less order there while NATS is down).
        ack_timeout: seconds to wait for a stream acknowledgement before an event goes to the outbox.
        max_in_flight: unacknowledged publishes at most; `publish` waits past it (backpressure).

    """

    def __init__(
        self, conn: NatsConnection, outbox: Outbox, *, ack_timeout: float = 5.0, max_in_flight: int = 4096
    ) -> None:
        self._conn = conn
        self._outbox = outbox
        self._ack_timeout = ack_timeout
        self._in_flight: asyncio.Queue[tuple[asyncio.Future[PubAck], OutboxEntry, float]] = asyncio.Queue(max_in_flight)
        self._reaper: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._wake_replay = asyncio.Event()
        self._closed = False
        self.published = 0
        self.outboxed = 0
        self.replayed = 0
        conn.add_listener(self._on_connection)

    def start(self) -> None:
        """Starts the acknowledgement reaper and the outbox replayer."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="hulk-events-reaper")
            self._replayer = asyncio.create_task(self._replay_loop(), name="hulk-outbox-replay")
            if len(self._outbox):
                self._wake_replay.set()

    @property
    def backlog(self) -> int:
        """Events waiting in the outbox."""
        return len(self._outbox)

    async def emit(
        self,
        kind: str,
        *,
        task_id: str,
        task_type: str,
        tenant: str,
        attempt: int,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        """Publishes a task transition on `hulk.task.<kind>`.

        The body is JSON: task_id, type, tenant, attempt, ts (wall-clock seconds) and `fields`
        (timings, error, result size...). `Nats-Msg-Id` is `<task_id>:<kind>:<attempt>`.
        """
        body = {"task_id": task_id, "type": task_type, "tenant": tenant, "attempt": attempt, "ts": time.time()}
        body.update(fields)
        hdrs = dict(headers or {})
        hdrs[HDR_MSG_ID] = f"{task_id}:{kind}:{attempt}"
        await self.publish(event_subject(kind), orjson.dumps(body), hdrs)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Publishes one message durably: to JetStream when possible, else to the outbox.

        Adds the current `traceparent` unless the headers carry one. Returns once the message is
        in flight (or in the outbox); waits only when `max_in_flight` publishes are unacknowledged.
        """
        hdrs = dict(headers or {})
        if "traceparent" not in hdrs:
            _tracing.inject(hdrs)
        entry = OutboxEntry(0, subject, payload, hdrs)
        if self._closed or not self._conn.connected or len(self._outbox):
            self._to_outbox(entry)
            return
        try:
            fut = await self._conn.js.publish_async(subject, payload, headers=dict(hdrs))
        except (TimeoutError, NatsError, OSError) as exc:
            log.debug("publish failed, to outbox: %r", exc)
            self._to_outbox(entry)
            return
        await self._in_flight.put((fut, entry, time.monotonic() + self._ack_timeout))

    def _to_outbox(self, entry: OutboxEntry) -> None:
        self._outbox.append(entry.subject, entry.payload, entry.headers)
        self.outboxed += 1
        if self._conn.connected:
            self._wake_replay.set()

    async def _reap(self) -> None:
        while True:
            fut, entry, deadline = await self._in_flight.get()
            try:
                await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
                self.published += 1
            except asyncio.CancelledError:
                if not fut.done():
                    raise
                self._to_outbox(entry)
            except Exception as exc:
                log.debug("event not acknowledged, to outbox: %r", exc)
                self._to_outbox(entry)
            finally:
                self._in_flight.task_done()

    def _on_connection(self, up: bool) -> None:
        if up:
            self._wake_replay.set()

    async def _replay_loop(self) -> None:
        while True:
            await self._wake_replay.wait()
            self._wake_replay.clear()
            if not self._conn.connected or not len(self._outbox):
                continue
            try:
                n = await self._outbox.replay(self._replay_batch_publish)
                if n:
                    log.info("outbox replayed %d events", n)
            except Exception as exc:
                log.debug("outbox replay interrupted: %r", exc)
                await asyncio.sleep(0.2)
                if self._conn.connected:
                    self._wake_replay.set()

    async def _replay_batch_publish(self, entry: OutboxEntry) -> None:
        await self._conn.js.publish(
            entry.subject, entry.payload, timeout=self._ack_timeout, headers=dict(entry.headers)
        )
        self.replayed += 1

    async def flush(self, timeout: float = 30.0) -> None:
        """Waits until every in-flight publish is settled and, when connected, the outbox is empty.

        Raises:
            TimeoutError: not flushed within `timeout` seconds.

        """

        async def _flush() -> None:
            await self._in_flight.join()
            while len(self._outbox) and self._conn.connected:
                self._wake_replay.set()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(_flush(), timeout)

    async def close(self) -> None:
        """Flushes what can be flushed, then stops (the outbox keeps the rest for the next start)."""
        with contextlib.suppress(TimeoutError):
            await self.flush(10.0)
        self._closed = True
        for task in (self._reaper, self._replayer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Events still in flight after the flush deadline are kept for the next start.
        while not self._in_flight.empty():
            _fut, entry, _ = self._in_flight.get_nowait()
            self._outbox.append(entry.subject, entry.payload, entry.headers)
