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
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from nats.errors import Error as NatsError

from hulk.errors import HulkError
from hulk.messaging.connection import NatsConnection, cancel_and_wait
from hulk.messaging.envelope import HDR_BATCH, HDR_MSG_ID, TaskEnvelope, batch_body, inject_trace
from hulk.messaging.outbox import Outbox, OutboxEntry
from hulk.messaging.pipeline import AckPipeline, PublishError
from hulk.messaging.streams import event_subject, intake_subject

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


def _full(exc: PublishError) -> bool:
    return exc.err_code in (10077, 10047) or "maximum" in exc.description.lower()


class TaskProducer:
    """Submits tasks to the intake stream.

    Args:
        conn: the NATS connection.
        timeout: seconds to wait for the stream's acknowledgement.
        max_pending: submissions in flight at most.
    """

    def __init__(self, conn: NatsConnection, *, timeout: float = 5.0, max_pending: int = 4096) -> None:
        self._conn = conn
        self._pipeline = AckPipeline(conn, timeout=timeout, max_pending=max_pending)

    @staticmethod
    def _result(task: TaskEnvelope, ack: dict[str, Any]) -> SubmitResult:
        return SubmitResult(task.id, int(ack.get("seq", 0)), bool(ack.get("duplicate", False)))

    async def submit(self, task: TaskEnvelope) -> SubmitResult:
        """Publishes `task` and waits for the stream to store it.

        Raises:
            IntakeFull: the intake stream refused it (full).
            PublishError: the stream refused it for another reason.
            TimeoutError: no acknowledgement in time (the task may or may not be stored; submitting
                it again with the same idempotency key is safe).
            nats.errors.Error: not connected.
        """
        fut = await self._pipeline.publish(intake_subject(task.type), task.body(), task.to_headers())
        try:
            return self._result(task, await fut)
        except PublishError as exc:
            if _full(exc):
                raise IntakeFull(f"intake stream is full: {exc.description}") from exc
            raise

    async def submit_many(self, tasks: list[TaskEnvelope], *, window: int = 4096) -> list[SubmitResult]:
        """Publishes many tasks pipelined (at most `window` unacknowledged); results in order.

        Raises:
            IntakeFull: one of them was refused (others may be stored).
        """
        results: list[SubmitResult] = []
        # The caller's trace context is the same for every task: look it up once.
        trace_headers: dict[str, str] = {}
        inject_trace(trace_headers)
        for start in range(0, len(tasks), window):
            chunk = tasks[start : start + window]
            messages = []
            for t in chunk:
                headers = t.to_headers(trace=False)
                if trace_headers and "traceparent" not in headers:
                    headers.update(trace_headers)
                messages.append((intake_subject(t.type), t.body(), headers))
            futs = await self._pipeline.publish_many(messages)
            for t, fut in zip(chunk, futs, strict=True):
                try:
                    results.append(self._result(t, await fut))
                except PublishError as exc:
                    for rest in futs:
                        rest.cancel()
                    if _full(exc):
                        raise IntakeFull(f"intake stream is full: {exc.description}") from exc
                    raise
        return results

    async def submit_batch(self, tasks: list[TaskEnvelope], *, batch_id: str | None = None) -> SubmitResult:
        """The bulk path: publishes many tasks of one type as ONE message (header `Hulk-Batch`).

        One publish, one stored message, one delivery and one ack for the whole batch: the intake
        hands each task to the handler separately and acks the message once every task is settled
        (a task to retry is re-published alone, a dead one is dead-lettered alone). The batch
        counts as one message for backpressure. `batch_id` (default: a new UUID) is its
        `Nats-Msg-Id`.

        Raises:
            ValueError: empty batch, or tasks of different types.
            IntakeFull: the intake stream refused it.
        """
        if not tasks:
            raise ValueError("tasks must not be empty")
        kind = tasks[0].type
        if any(t.type != kind for t in tasks):
            raise ValueError("tasks of one batch must share one type")
        hdrs = {HDR_MSG_ID: batch_id or f"batch:{uuid.uuid4().hex}", HDR_BATCH: str(len(tasks))}
        inject_trace(hdrs)
        fut = await self._pipeline.publish(intake_subject(kind), batch_body(tasks), hdrs)
        try:
            return self._result(tasks[0], await fut)
        except PublishError as exc:
            if _full(exc):
                raise IntakeFull(f"intake stream is full: {exc.description}") from exc
            raise

    async def close(self) -> None:
        """Stops the acknowledgement pipeline."""
        await self._pipeline.close()


class EventPublisher:
    """Publishes events to JetStream; falls back to a durable local outbox; replays it in order.

    Args:
        conn: the NATS connection.
        outbox: the local outbox.
        ack_timeout: seconds to wait for a stream acknowledgement before an event goes to the outbox.
        max_in_flight: unacknowledged publishes at most; `publish` waits past it (backpressure).
    """

    def __init__(
        self, conn: NatsConnection, outbox: Outbox, *, ack_timeout: float = 5.0, max_in_flight: int = 4096
    ) -> None:
        self._conn = conn
        self._outbox = outbox
        self._pipeline = AckPipeline(conn, timeout=ack_timeout, max_pending=max_in_flight)
        self._replayer: asyncio.Task[None] | None = None
        self._wake_replay = asyncio.Event()
        self._closed = False
        self.published = 0
        self.outboxed = 0
        self.replayed = 0
        conn.add_listener(self._on_connection)

    def start(self) -> None:
        """Starts the outbox replayer (the acknowledgement pipeline starts with the first publish)."""
        if self._replayer is None:
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
        if fields:
            body.update(fields)
        hdrs = dict(headers) if headers else {}
        hdrs[HDR_MSG_ID] = f"{task_id}:{kind}:{attempt}"
        await self.publish(event_subject(kind), orjson.dumps(body), hdrs)

    async def emit_batch(self, kind: str, events: list[dict[str, Any]]) -> None:
        """Publishes many transitions of one kind as one message on `hulk.task.<kind>`.

        The body is a JSON array of event objects (as `emit` builds them) and the header
        `Hulk-Batch` holds their count: one publish and one acknowledgement for the whole batch,
        which is how the hot path reports completions (once per event-loop turn). `Nats-Msg-Id` is
        unique per batch, so a replayed batch is dropped as a duplicate.
        """
        if events:
            await self.emit_encoded(kind, orjson.dumps(events), len(events))

    async def emit_encoded(self, kind: str, array: bytes, count: int) -> None:
        """`emit_batch` of events already written as a JSON array (`array`) of `count` objects."""
        hdrs = {HDR_MSG_ID: f"batch:{uuid.uuid4().hex}", HDR_BATCH: str(count)}
        await self.publish(event_subject(kind), array, hdrs)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Publishes one message durably: to JetStream when possible, else to the outbox.

        Adds the current `traceparent` unless the headers carry one. Returns once the message is
        in flight (or in the outbox); waits only when `max_in_flight` publishes are unacknowledged.
        """
        hdrs = headers if headers is not None else {}
        inject_trace(hdrs)
        entry = OutboxEntry(0, subject, payload, hdrs)
        if self._closed or not self._conn.connected or len(self._outbox):
            self._to_outbox(entry)
            return
        try:
            fut = await self._pipeline.publish(subject, payload, hdrs)
        except (NatsError, OSError) as exc:
            log.debug("publish failed, to outbox: %r", exc)
            self._to_outbox(entry)
            return
        fut.add_done_callback(lambda f: self._settled(f, entry))

    async def publish_group(self, messages: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Publishes `(subject, payload)` messages bound to one stream with one acknowledgement.

        Durable like `publish` (outbox when disconnected, and the whole group to the outbox if its
        acknowledgement fails), for the hot path's status records; see `AckPipeline.publish_group`.

        Returns:
            A future resolved once the group is safe: stored by the stream, or in the local outbox.
        """
        safe: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not messages:
            safe.set_result(None)
            return safe
        # One trace context for the group (it is the same for every message of it).
        trace_headers: dict[str, str] = {}
        inject_trace(trace_headers)
        headers = trace_headers or None
        if self._closed or not self._conn.connected or len(self._outbox):
            self._group_to_outbox(messages, headers)
            safe.set_result(None)
            return safe
        try:
            fut = await self._pipeline.publish_group(messages, headers)
        except (NatsError, OSError) as exc:
            log.debug("group publish failed, to outbox: %r", exc)
            self._group_to_outbox(messages, headers)
            safe.set_result(None)
            return safe
        fut.add_done_callback(lambda f: self._group_settled(f, messages, headers, safe))
        return safe

    def _group_to_outbox(self, messages: list[tuple[str, bytes]], headers: dict[str, str] | None) -> None:
        for subject, payload in messages:
            self._to_outbox(OutboxEntry(0, subject, payload, dict(headers) if headers else {}))

    def _group_settled(
        self,
        fut: asyncio.Future[dict[str, Any]],
        messages: list[tuple[str, bytes]],
        headers: dict[str, str] | None,
        safe: asyncio.Future[None],
    ) -> None:
        try:
            if not fut.cancelled() and fut.exception() is None:
                self.published += len(messages)
                return
            self._group_to_outbox(messages, headers)
        finally:
            if not safe.done():
                safe.set_result(None)

    def _settled(self, fut: asyncio.Future[dict[str, Any]], entry: OutboxEntry) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.published += 1
            return
        self._to_outbox(entry)

    def _to_outbox(self, entry: OutboxEntry) -> None:
        self._outbox.append(entry.subject, entry.payload, entry.headers)
        self.outboxed += 1
        if self._conn.connected:
            self._wake_replay.set()

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
                n = await self._replay()
                if n:
                    log.info("outbox replayed %d events", n)
            except Exception as exc:
                log.debug("outbox replay interrupted: %r", exc)
                await asyncio.sleep(0.2)
                if self._conn.connected:
                    self._wake_replay.set()

    async def _replay(self, batch: int = 512) -> int:
        """Publishes the outbox in order, pipelined by `batch`; removes each entry once stored."""
        done = 0
        while True:
            chunk = list(self._outbox.entries(batch))
            if not chunk:
                return done
            futs = [await self._pipeline.publish(e.subject, e.payload, dict(e.headers)) for e in chunk]
            for entry, fut in zip(chunk, futs, strict=True):
                await fut  # the first failure stops the replay, keeping order
                self._outbox.remove(entry.seq)
                self.replayed += 1
                done += 1

    async def flush(self, timeout: float = 30.0) -> None:
        """Waits until every in-flight publish is settled and, when connected, the outbox is empty.

        Raises:
            TimeoutError: not flushed within `timeout` seconds.
        """

        async def _flush() -> None:
            await self._pipeline.wait_idle()
            while len(self._outbox) and self._conn.connected:
                self._wake_replay.set()
                await asyncio.sleep(0.05)
                await self._pipeline.wait_idle()

        await asyncio.wait_for(_flush(), timeout)

    async def close(self) -> None:
        """Flushes what can be flushed, then stops (the outbox keeps the rest for the next start)."""
        with contextlib.suppress(TimeoutError):
            await self.flush(10.0)
        self._closed = True
        await cancel_and_wait(self._replayer)
        # Publishes still unacknowledged fail now and land in the outbox for the next start.
        await self._pipeline.close()
        await asyncio.sleep(0)
