"""Task intake: the shared durable pull consumer, supervised, feeding free execution slots only.

Every fetched message owns one execution slot from the moment it arrives until it is settled
(ack, nak, term, defer): the intake asks the server only for as many messages as it has idle slots,
never more, with one pull request outstanding at a time. A request ends when all its messages came,
or with a status (408 expired, 409 ...); the next one asks for the slots free at that moment. So
backpressure runs end to end: slow handlers leave messages in the stream, where other instances
take them, and `max_ack_pending` (the slots of all instances) bounds what the cluster holds.

Supervision: pull requests ask for idle heartbeats; a request that hears nothing for three
heartbeat intervals, a reconnect, or a subscription error makes the intake drop its subscription
and pull anew (recreating the consumer if the server lost it). nats-py's own pull subscriptions are
known to stop silently after a server restart; this loop does not depend on them. `healthy` is
"connected, consumer present, and the last pull answered recently".

Progress: one loop sends `+WPI` (`in_progress`) for every running delivery each
`progress_interval`, so `ack_wait` stays short while a task may run much longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from hulk.messaging.connection import NatsConnection
from hulk.messaging.envelope import (
    HDR_BATCH,
    HDR_DELIVERIES,
    HDR_ERROR,
    HDR_MSG_ID,
    HDR_REASON,
    HDR_TASK_ID,
    HDR_TASK_TYPE,
    HDR_TENANT,
    PoisonMessage,
    TaskEnvelope,
)
from hulk.messaging.frames import AckBatcher
from hulk.messaging.streams import (
    INTAKE_CONSUMER,
    STREAM_TASKS,
    dead_letter_subject,
    ensure_intake_consumer,
    intake_subject,
)

__all__ = ["BatchItemDelivery", "Intake", "NatsDelivery"]

log = logging.getLogger("hulk.messaging")

Handler = Callable[["NatsDelivery"], Awaitable[None] | None]
BatchHandler = Callable[[list["NatsDelivery"]], Awaitable[None] | None]
Republisher = Callable[[TaskEnvelope, float], Awaitable[None]]


def _ack_reply_counts(reply: str | None) -> tuple[int, int] | None:
    """(deliveries, pending) from a JetStream ack subject, without building nats-py's metadata.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (9 tokens), or the
    12-token form with domain and account hash before the stream.
    """
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[4]), int(tokens[8])
        if len(tokens) >= 11:
            return int(tokens[6]), int(tokens[10])
    except ValueError:
        return None
    return None


class NatsDelivery:
    """One fetched task and the slot it owns until it is settled.

    Attributes:
        task: the task read from the message.
        attempt: 1-based attempt number (deliveries of this copy plus attempts spent by earlier copies).
        deliveries: how many times the server delivered this message.
        received_at: monotonic seconds of arrival.

    """

    __slots__ = ("_intake", "_last_progress", "attempt", "deliveries", "msg", "received_at", "settled", "task")

    def __init__(self, intake: Intake, msg: Msg, task: TaskEnvelope, deliveries: int) -> None:
        self._intake = intake
        self.msg = msg
        self.task = task
        self.deliveries = deliveries
        self.attempt = deliveries + task.attempt_offset
        self.received_at = time.monotonic()
        self._last_progress = self.received_at
        self.settled = False

    @property
    def headers(self) -> dict[str, str]:
        """The message's headers (traceparent, Nats-Msg-Id...)."""
        return dict(self.msg.headers or {})

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self._intake._release(self)
        return True

    async def ack(self) -> None:
        """Acknowledges: the task reached a terminal state (succeeded or cancelled)."""
        if self._settle():
            await self.msg.ack()

    def ack_nowait(self) -> None:
        """`ack` without waiting: the acknowledgement leaves with the others of this loop turn."""
        if self._settle():
            self._intake.acks.add(self.msg)

    async def nak(self, delay: float | None = None) -> None:
        """Asks for redelivery after `delay` seconds (a retry; it spends an attempt).

        Delays longer than the intake's `max_nak_delay` are re-published to the scheduler queue
        and acknowledged instead, so the server does not hold a message for hours.
        """
        if not self._settle():
            return
        if delay is not None and delay > self._intake.max_nak_delay and self._intake.republish is not None:
            await self._republish(delay, self.attempt)
            return
        await self.msg.nak(delay=delay if delay and delay > 0 else None)

    async def defer(self, delay: float) -> None:
        """Delays the task by `delay` seconds without spending an attempt (e.g. an open breaker).

        The task is re-published to the scheduler queue with its attempt count kept, and this
        message is acknowledged; without a scheduler, it falls back to `nak(delay)`.
        """
        if not self._settle():
            return
        if self._intake.republish is None:
            await self.msg.nak(delay=max(delay, 0.001))
            return
        await self._republish(delay, self.attempt - 1)

    async def _republish(self, delay: float, spent: int) -> None:
        republish = self._intake.republish
        assert republish is not None
        t = self.task
        copy = msgspec.structs.replace(
            t, idempotency_key=f"{t.msg_id}:a{spent}:d{self.deliveries}", attempt_offset=spent
        )
        try:
            await republish(copy, delay)
        except Exception:
            await self.msg.nak(delay=min(delay, self._intake.max_nak_delay))
            raise
        await self.msg.ack()

    async def term(self, reason: str, error: str | None = None) -> None:
        """Dead-letters the task (original headers, reason, last error) and terminates the message."""
        if not self._settle():
            return
        await self._intake.dead_letter(self.msg, self.task, reason, error, self.deliveries)
        await self.msg.term()

    async def in_progress(self) -> None:
        """Tells the server the task is still running (resets its ack wait)."""
        if not self.settled:
            self._last_progress = time.monotonic()
            await self.msg.in_progress()


class _Batch:
    """One batch message: acked once each of its tasks is settled; holds one slot meanwhile."""

    __slots__ = ("_intake", "_last_progress", "msg", "remaining", "settled")

    def __init__(self, intake: Intake, msg: Msg, count: int) -> None:
        self._intake = intake
        self.msg = msg
        self.remaining = count
        self.settled = False
        self._last_progress = time.monotonic()

    async def item_done(self) -> None:
        if self._last_item():
            await self.msg.ack()

    def item_done_nowait(self) -> None:
        if self._last_item():
            self._intake.acks.add(self.msg)

    def _last_item(self) -> bool:
        self.remaining -= 1
        if self.remaining == 0 and not self.settled:
            self.settled = True
            self._intake._release(self)  # type: ignore[arg-type]
            return True
        return False

    async def in_progress(self) -> None:
        if not self.settled:
            self._last_progress = time.monotonic()
            await self.msg.in_progress()


class BatchItemDelivery(NatsDelivery):
    """One task of a batch message (see `TaskProducer.submit_batch`), settled on its own.

    `ack` marks it done; `nak(delay)` and `defer(delay)` re-publish this task alone for later
    (through the intake's `republish`, else straight back to its intake subject); `term` dead-letters
    it alone. The batch message is acked once every task is settled.
    """

    __slots__ = ("_batch",)

    def __init__(self, batch: _Batch, task: TaskEnvelope, deliveries: int) -> None:
        super().__init__(batch._intake, batch.msg, task, deliveries)
        self._batch = batch

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        return True

    async def ack(self) -> None:
        """Marks this task terminal (succeeded or cancelled)."""
        if self._settle():
            await self._batch.item_done()

    def ack_nowait(self) -> None:
        """`ack` without waiting (the batch's acknowledgement leaves with this loop turn's others)."""
        if self._settle():
            self._batch.item_done_nowait()

    async def nak(self, delay: float | None = None) -> None:
        """Re-publishes this task alone to run again after `delay` (spends an attempt)."""
        if self._settle():
            await self._again(delay or 0.0, self.attempt)

    async def defer(self, delay: float) -> None:
        """Re-publishes this task alone to run after `delay`, without spending an attempt."""
        if self._settle():
            await self._again(delay, self.attempt - 1)

    async def _again(self, delay: float, spent: int) -> None:
        t = self.task
        copy = msgspec.structs.replace(t, idempotency_key=f"{t.id}:a{spent}:d{self.deliveries}", attempt_offset=spent)
        intake = self._intake
        if intake.republish is not None:
            await intake.republish(copy, delay)
        else:
            await intake._conn.js.publish(intake_subject(t.type), copy.body(), headers=copy.to_headers())
        await self._batch.item_done()

    async def term(self, reason: str, error: str | None = None) -> None:
        """Dead-letters this task alone (its own body, the batch's headers)."""
        if self._settle():
            hdrs: dict[str, Any] = dict(self.msg.headers or {})
            hdrs.pop(HDR_BATCH, None)
            hdrs[HDR_MSG_ID] = f"dead:{self.task.id}:{self.deliveries}"
            hdrs[HDR_REASON] = reason
            hdrs[HDR_DELIVERIES] = str(self.deliveries)
            hdrs[HDR_TASK_ID] = self.task.id
            hdrs[HDR_TASK_TYPE] = self.task.type
            hdrs[HDR_TENANT] = self.task.tenant
            if error:
                hdrs[HDR_ERROR] = error[:4000]
            await self._intake._conn.js.publish(dead_letter_subject(self.task.type), self.task.body(), headers=hdrs)
            self._intake.dead_lettered += 1
            await self._batch.item_done()

    async def in_progress(self) -> None:
        """Progress of the whole batch message."""
        await self._batch.in_progress()


class Intake:
    """Supervised pull loop of the shared intake consumer.

    Args:
        conn: the NATS connection.
        handler: called with each `NatsDelivery` (quickly: hand it to the engine and return).
        slots: execution slots of this instance (the most deliveries it holds at once).
        consumer_config: the shared consumer's configuration (see `intake_consumer_config`).
        max_attempts: attempts per task; a delivery past it (the last one crashed its instance) is
            dead-lettered without running.
        stream: intake stream.
        pull_expires: seconds a pull request waits on the server for messages.
        heartbeat: idle heartbeat interval asked of the server for each pull request.
        progress_interval: seconds between progress acks of a running task (< ack_wait).
        max_nak_delay: longer retry delays are re-published (see `NatsDelivery.nak`).
        republish: `(task, delay)` coroutine that re-publishes a task for later (the scheduler's).
        update_consumer: apply `consumer_config` to an existing consumer that differs.

    """

    def __init__(
        self,
        conn: NatsConnection,
        handler: Handler,
        *,
        slots: int,
        consumer_config: ConsumerConfig,
        max_attempts: int,
        stream: str = STREAM_TASKS,
        pull_expires: float = 5.0,
        heartbeat: float = 1.0,
        progress_interval: float | None = None,
        max_nak_delay: float = 600.0,
        republish: Republisher | None = None,
        update_consumer: bool = True,
        batch_handler: BatchHandler | None = None,
        capacity: Callable[[], int] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if heartbeat * 2 >= pull_expires:
            raise ValueError(f"heartbeat ({heartbeat}) must be < pull_expires/2 ({pull_expires})")
        self._conn = conn
        self._handler = handler
        self.acks = AckBatcher(conn)
        """Acknowledgements of settled deliveries, sent once per loop turn (see `ack_nowait`)."""
        self.slots = slots
        self.consumer_config = consumer_config
        self.durable = consumer_config.durable_name or INTAKE_CONSUMER
        self.stream = stream
        self.max_attempts = max_attempts
        self.pull_expires = pull_expires
        self.heartbeat = heartbeat
        ack_wait = consumer_config.ack_wait or 30.0
        self.progress_interval = progress_interval or max(0.05, ack_wait / 3)
        self.max_nak_delay = max_nak_delay
        self.republish = republish
        self.update_consumer = update_consumer
        self._batch_handler = batch_handler
        self._capacity = capacity
        self._owned: set[NatsDelivery] = set()
        self._remaining = 0
        self._last_answer = time.monotonic()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._fetching = False
        self._consumer_ok = False
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._reset_requested = False
        self._error_backoff = 0.0
        self.received = 0
        self.dead_lettered = 0
        self.resets = 0
        self.num_pending = 0
        conn.add_listener(self._on_connection)

    # --- state -----------------------------------------------------------------------------------

    @property
    def owned(self) -> int:
        """Deliveries held (running or waiting for a worker): busy slots."""
        return len(self._owned)

    @property
    def free_slots(self) -> int:
        """Idle slots."""
        return self.slots - len(self._owned)

    @property
    def healthy(self) -> bool:
        """Readiness: connected, consumer present, and the last pull answered recently."""
        if not (self._fetching and self._conn.connected and self._consumer_ok):
            return False
        if self._remaining == 0:
            return True
        return time.monotonic() - self._last_answer < 3 * self.heartbeat + 1.0

    def _release(self, delivery: NatsDelivery) -> None:
        self._owned.discard(delivery)
        if not self._owned:
            self._idle.set()
        self._wake.set()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Creates (or checks) the consumer and starts the pull and progress loops."""
        await self._ensure_consumer()
        self._fetching = True
        self._tasks = [
            asyncio.create_task(self._pull_loop(), name="hulk-intake-pull"),
            asyncio.create_task(self._progress_loop(), name="hulk-intake-progress"),
        ]

    async def _ensure_consumer(self) -> None:
        await ensure_intake_consumer(
            self._conn.js, self.consumer_config, update=self.update_consumer, stream=self.stream
        )
        self._consumer_ok = True

    async def stop_fetching(self) -> None:
        """Stops asking for new messages (drain starts); held deliveries keep their slots."""
        self._fetching = False
        self._wake.set()
        if self._tasks:
            pull = self._tasks[0]
            pull.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pull
        await self._drop_subscription()

    async def drain(self, timeout: float | None = None) -> bool:
        """Stops fetching and waits until every held delivery is settled and acknowledged; True if they all were."""
        await self.stop_fetching()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            await self.acks.wait()
        return True

    async def stop(self) -> None:
        """Stops every loop. Unsettled deliveries are left to the server's ack wait (redelivered)."""
        await self.stop_fetching()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.acks.wait()

    # --- pulling ---------------------------------------------------------------------------------

    def _on_connection(self, up: bool) -> None:
        # A reconnect may have lost the pending pull request (server restart): pull anew.
        self._reset_requested = True
        self._wake.set()

    async def _drop_subscription(self) -> None:
        sub, self._sub = self._sub, None
        self._remaining = 0
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _subscribe(self) -> None:
        nc = self._conn.nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
        self._remaining = 0

    async def _pull_loop(self) -> None:
        nms = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        while self._fetching:
            try:
                if self._reset_requested:
                    self._reset_requested = False
                    await self._reset("reconnected")
                if not self._conn.connected:
                    await self._conn.wait_connected()
                    continue
                if self._sub is None:
                    await self._subscribe()
                if self._error_backoff:
                    delay, self._error_backoff = self._error_backoff, 0.0
                    await asyncio.sleep(delay)
                free = self.slots - len(self._owned)
                if self._capacity is not None:
                    free = min(free, self._capacity())
                if self._remaining == 0 and free > 0:
                    req = {
                        "batch": free,
                        "expires": int(self.pull_expires * 1e9),
                        "idle_heartbeat": int(self.heartbeat * 1e9),
                    }
                    self._remaining = free
                    self._last_answer = time.monotonic()
                    await self._conn.nc.publish(nms, orjson.dumps(req), reply=self._inbox)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.heartbeat)
                if self._remaining and time.monotonic() - self._last_answer > 3 * self.heartbeat:
                    await self._reset("pull request went silent")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("intake pull loop error (%r); resubscribing", exc)
                await self._reset(repr(exc))
                await asyncio.sleep(min(1.0, self.heartbeat))

    async def _reset(self, why: str) -> None:
        self.resets += 1
        log.info("intake: resubscribing (%s)", why)
        await self._drop_subscription()
        if self._conn.connected:
            try:
                await self._ensure_consumer()
            except Exception as exc:
                self._consumer_ok = False
                log.warning("intake: consumer not available (%r)", exc)
                self._error_backoff = min(2.0, self.heartbeat)

    async def _on_msg(self, msg: Msg) -> None:
        self._last_answer = time.monotonic()
        hdrs = msg.headers
        status = hdrs.get("Status") if hdrs else None
        if status:
            if status == "100":
                return
            self._remaining = 0
            if status not in ("408", "404"):
                desc = hdrs.get("Description", "") if hdrs else ""
                log.info("intake: pull ended with %s %s", status, desc)
                if "Consumer Deleted" in desc or "Consumer is push based" in desc:
                    self._consumer_ok = False
                    self._reset_requested = True
                self._error_backoff = 0.1
            self._wake.set()
            return
        if self._remaining > 0:
            self._remaining -= 1
        if self._remaining == 0:
            self._wake.set()
        self.received += 1
        await self._dispatch(msg)

    async def _dispatch(self, msg: Msg) -> None:
        parsed = _ack_reply_counts(msg.reply)
        if parsed is None:
            log.warning("intake: ignoring a non-JetStream message on %s", msg.subject)
            return
        deliveries, self.num_pending = parsed
        hdrs = msg.headers
        if hdrs and HDR_BATCH in hdrs:
            await self._dispatch_batch(msg, hdrs, deliveries)
            return
        try:
            task = TaskEnvelope.decode(msg.data, hdrs)
        except (PoisonMessage, ValueError) as exc:
            await self._settle_dead(msg, None, f"poison: {exc}", None, deliveries)
            return
        delivery = NatsDelivery(self, msg, task, deliveries)
        if delivery.attempt > self.max_attempts:
            await self._settle_dead(msg, task, "delivery limit reached", None, deliveries)
            return
        self._owned.add(delivery)
        self._idle.clear()
        try:
            result = self._handler(delivery)
            if result is not None:
                await result
        except Exception as exc:
            log.exception("intake handler failed; the task will be redelivered")
            if not delivery.settled:
                with contextlib.suppress(Exception):
                    await delivery.nak(delay=1.0)
            del exc

    async def _dispatch_batch(self, msg: Msg, hdrs: dict[str, str], deliveries: int) -> None:
        try:
            tasks = TaskEnvelope.decode_batch(msg.data, hdrs)
        except (PoisonMessage, ValueError) as exc:
            await self._settle_dead(msg, None, f"poison: {exc}", None, deliveries)
            return
        batch = _Batch(self, msg, len(tasks))
        items = [BatchItemDelivery(batch, t, deliveries) for t in tasks]
        if items[0].attempt > self.max_attempts:
            await self._settle_dead(msg, tasks[0], "delivery limit reached", None, deliveries)
            return
        self._owned.add(batch)  # type: ignore[arg-type]
        self._idle.clear()
        if self._batch_handler is not None:
            # The batch owns one slot: its tasks run one after another in that slot.
            try:
                result = self._batch_handler(list(items))
                if result is not None:
                    await result
            except Exception:
                log.exception("intake batch handler failed; unsettled items will be re-published")
                for item in items:
                    if not item.settled:
                        with contextlib.suppress(Exception):
                            await item.nak(delay=1.0)
            return
        for item in items:
            try:
                result = self._handler(item)
                if result is not None:
                    await result
            except Exception:
                log.exception("intake handler failed on a batch item; it will be re-published")
                if not item.settled:
                    with contextlib.suppress(Exception):
                        await item.nak(delay=1.0)

    async def _settle_dead(
        self, msg: Msg, task: TaskEnvelope | None, reason: str, error: str | None, deliveries: int
    ) -> None:
        try:
            await self.dead_letter(msg, task, reason, error, deliveries)
            await msg.term()
        except Exception:
            log.exception("intake: dead-lettering failed")

    async def dead_letter(
        self, msg: Msg, task: TaskEnvelope | None, reason: str, error: str | None, deliveries: int
    ) -> None:
        """Publishes `msg` to the dead-letter subject with its headers, reason and last error."""
        hdrs: dict[str, Any] = dict(msg.headers or {})
        original_id = hdrs.get(HDR_MSG_ID) or f"seq{msg.metadata.sequence.stream}"
        hdrs[HDR_MSG_ID] = f"dead:{original_id}"
        hdrs[HDR_REASON] = reason
        if task is not None:
            hdrs[HDR_TASK_ID] = task.id
            hdrs[HDR_TASK_TYPE] = task.type
            hdrs[HDR_TENANT] = task.tenant
        hdrs[HDR_DELIVERIES] = str(deliveries)
        hdrs["Hulk-Original-Subject"] = msg.subject
        if error:
            hdrs[HDR_ERROR] = error[:4000]
        await self._conn.js.publish(dead_letter_subject(task.type if task else None), msg.data, headers=hdrs)
        self.dead_lettered += 1

    # --- progress --------------------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            if not self._conn.connected:
                continue
            cutoff = time.monotonic() - self.progress_interval * 0.9
            for d in list(self._owned):
                if not d.settled and d._last_progress <= cutoff:
                    try:
                        await d.in_progress()
                    except Exception as exc:
                        log.debug("progress ack failed: %r", exc)
                        break


async def consumer_exists(conn: NatsConnection, stream: str = STREAM_TASKS, durable: str = INTAKE_CONSUMER) -> bool:
    """True when the shared intake consumer exists on the server."""
    try:
        await conn.js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    return True
