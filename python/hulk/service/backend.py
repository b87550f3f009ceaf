"""The HTTP API's `TaskBackend` in service mode: submissions go through JetStream, status through KV.

A submission is published to the intake stream (`Nats-Msg-Id` = its idempotency key, `traceparent`
in the headers) and acknowledged by the stream before the answer: a 202 means durably accepted. Any
instance may run it; its status and result are read from the KV bucket, through the L1 cache for
terminal records (which never change). Cancellation is broadcast on `hulk.control.cancel`, so the
instance that holds the task cancels it, wherever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from nats.errors import Error as NatsError
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind

from hulk._native import L1Cache, __version__
from hulk.engine import Hulk, IdGenerator, PayloadError, UnknownTaskType
from hulk.errors import HulkError
from hulk.http.models import SubmitTask
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.kvstore import WRONG_LAST_SEQUENCE
from hulk.messaging.node import MessagingNode
from hulk.messaging.pipeline import PublishError
from hulk.messaging.scheduler import schedule_task
from hulk.observability import get_logger, set_level
from hulk.service.bridge import CancelledIds

CANCEL_SUBJECT = "hulk.control.cancel"
TERMINAL = frozenset({"succeeded", "dead", "cancelled"})
# Sortable UUIDv7 ids, like the engine's own (the intake keeps them when it runs the task).
_new_id = IdGenerator()
_IDEMPOTENCY_NS = uuid.UUID("5b1b3a8e-8f1e-4c55-9d7b-6c2f0d1e4a90")
log = get_logger("hulk.service")
_TRACER = otel_trace.get_tracer("hulk.service")
T = TypeVar("T")


class NotConnected(HulkError):
    """NATS is unreachable right now: the submission was not accepted (HTTP 503)."""


def task_id_for(tenant: str, idempotency_key: str | None) -> str:
    """A new task id, or the one id an idempotency key always maps to (per tenant).

    Deriving the id from (tenant, key) means a duplicate submission, dropped by the stream's
    duplicate window, still answers with the id of the task that was accepted.
    """
    if idempotency_key is None:
        return _new_id()
    return uuid.uuid5(_IDEMPOTENCY_NS, f"{tenant}\x00{idempotency_key}").hex


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """`awaitable`'s result if it comes within `timeout` seconds, else TimeoutError, on time.

    Unlike `asyncio.wait_for` on Python 3.11, this returns on time even when the awaited code swallows
    its cancellation: 3.11's `wait_for`, which nats-py uses inside every request, drops a cancellation
    that arrives as its own future completes, so a KV wait cancelled at its deadline could go on until
    the task finished. The awaitable is cancelled again until it has stopped.

    Raises:
        TimeoutError: no result within `timeout` seconds.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            raise TimeoutError(f"no result within {timeout}s")
        return task.result()
    finally:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)


@contextlib.contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    """Turns NATS failures (disconnected, no answer in time) into `NotConnected`: HTTP 503, not 500."""
    try:
        yield
    except (NatsError, TimeoutError) as exc:
        raise NotConnected(f"NATS failed while {doing}: {type(exc).__name__}: {exc}") from exc


def _view(record: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    view = dict(record)
    view.setdefault("id", task_id)
    return view


class ServiceBackend:
    """Implements `hulk.http.TaskBackend` on the engine, the messaging node and the cache.

    Args:
        engine: this instance's engine.
        node: the messaging node (connection, producer, status store).
        cache: the multi-level cache (or None), for its statistics and flush.
        readiness: returns (ready, checks) for `/ready`.
        instance_id: this instance's id.
        on_drain: starts a graceful drain.
    """

    def __init__(
        self,
        *,
        engine: Hulk,
        node: MessagingNode,
        cache: Any,
        readiness: Callable[[], tuple[bool, Mapping[str, Any]]],
        instance_id: str,
        on_drain: Callable[[], None],
        cancelled: CancelledIds,
    ) -> None:
        self.engine = engine
        self.node = node
        self.cache = cache
        self._readiness = readiness
        self.instance_id = instance_id
        self._on_drain = on_drain
        self.cancelled = cancelled
        self.started_at = time.monotonic()
        # Terminal records never change: keep them in the native L1 so repeated reads skip NATS.
        self._terminal = L1Cache(50_000, ttl=300.0)
        self._max_payload = engine.config.max_payload_bytes

    # --- tasks ---------------------------------------------------------------------------------

    async def submit(self, request: SubmitTask, *, tenant: str, traceparent: str | None) -> Mapping[str, Any]:
        """Publishes the task to the intake stream (or the scheduler queue when delayed)."""
        if request.type not in self.engine.registry:
            raise UnknownTaskType(request.type)
        payload_size = len(orjson.dumps(request.payload))
        if payload_size > self._max_payload:
            raise PayloadError(f"payload is {payload_size} bytes, more than the {self._max_payload} allowed")
        producer = self.node.producer
        conn = self.node.conn
        if producer is None or conn is None or not conn.connected:
            raise NotConnected("NATS is not connected: retry later")
        task_id = task_id_for(tenant, request.idempotency_key)
        if not otel_trace.get_current_span().is_recording():
            # Outside a recorded trace (a request the HTTP sampler dropped): no span at all, which
            # is most submissions; a span the sampler drops would still cost its ids and context.
            return await self._submit(request, task_id, tenant, traceparent)
        attributes = {"hulk.task.id": task_id, "hulk.task.type": request.type, "hulk.tenant": tenant}
        with _TRACER.start_as_current_span(f"submit {request.type}", kind=SpanKind.PRODUCER, attributes=attributes):
            return await self._submit(request, task_id, tenant, traceparent)

    async def _submit(
        self, request: SubmitTask, task_id: str, tenant: str, traceparent: str | None
    ) -> Mapping[str, Any]:
        producer, conn = self.node.producer, self.node.conn
        assert producer is not None  # checked by submit
        assert conn is not None
        # With tracing on, the submission span is current and goes in the message (the execution
        # span becomes its child); without, the caller's own traceparent travels on as it came.
        traced = otel_trace.get_current_span().get_span_context().is_valid
        headers = {"traceparent": traceparent} if traceparent and not traced else {}
        envelope = TaskEnvelope(
            type=request.type,
            payload=request.payload,
            id=task_id,
            tenant=tenant,
            # The id already stands for (tenant, key): as the Nats-Msg-Id it dedups per tenant, where
            # the bare key would drop another tenant's task that happens to use the same key.
            idempotency_key=None,
            headers=headers,
            timeout=request.timeout,
            max_retries=request.max_retries,
            priority=request.priority,
        )
        record = {"id": task_id, "type": request.type, "tenant": tenant, "attempt": 0, "priority": request.priority}
        record["created_at"] = envelope.created_at
        if request.timeout is not None:
            record["timeout"] = request.timeout
        if request.max_retries is not None:
            record["max_retries"] = request.max_retries
        if request.delay:
            with _unavailable("scheduling the task"):
                await schedule_task(conn, envelope, run_at=time.time() + request.delay)
            record["status"] = "scheduled"
            await self._settle_record(task_id, await self._send_record(task_id, record))
            return {"id": task_id, "status": "scheduled"}
        # The first record and the task go out back to back and their acknowledgements are awaited
        # together: one round trip per submission, not two.
        record["status"] = "queued"
        created = await self._send_record(task_id, record)
        try:
            with _unavailable("submitting the task"):
                result = await producer.submit(envelope)
        except BaseException:
            await self._undo_record(task_id, created)
            raise
        stored = await self._settle_record(task_id, created)
        if result.duplicate:
            # The stream dropped the copy: the task accepted first keeps its record, whatever its state.
            existing = None if stored else await self._record(task_id)
            return {"id": task_id, "status": str((existing or {}).get("status", "queued"))}
        return {"id": task_id, "status": "queued"}

    async def _send_record(self, task_id: str, record: Mapping[str, Any]) -> asyncio.Future[dict[str, Any]] | None:
        """Sends the task's first record as a create: stored only if the task has no record yet.

        An instance may fetch and run the task before this write lands: an unconditional write could
        then overwrite its `running` or final record with `queued` for good. The create is acknowledged
        before the submission is answered, so a 202 means any instance can read the task at once.
        """
        store = self.node.status
        if store is None:
            return None
        try:
            return await store.create_nowait(task_id, record)
        except NatsError as exc:
            log.warning("submit.record_not_written", task_id=task_id, error=repr(exc))
            return None

    async def _settle_record(self, task_id: str, created: asyncio.Future[dict[str, Any]] | None) -> bool:
        """Waits for the create; True when this submission's record was stored."""
        if created is None:
            return False
        try:
            await created
        except PublishError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                log.warning("submit.record_not_written", task_id=task_id, error=repr(exc))
            return False  # on WRONG_LAST_SEQUENCE the task already has a record (a duplicate, or ran already)
        except TimeoutError as exc:
            # Accepted all the same: the engine writes the record as soon as the task runs.
            log.warning("submit.record_not_written", task_id=task_id, error=repr(exc))
            return False
        return True

    async def _undo_record(self, task_id: str, created: asyncio.Future[dict[str, Any]] | None) -> None:
        """The task was not accepted: removes the first record this submission stored, if it did."""
        if not await self._settle_record(task_id, created) or self.node.status is None:
            return
        try:
            await self.node.status.delete(task_id)
        except Exception as exc:
            log.warning("submit.record_not_removed", task_id=task_id, error=repr(exc))

    async def _record(self, task_id: str) -> dict[str, Any] | None:
        cached = self._terminal.get(task_id)
        if cached is not None:
            return dict(cached)
        live = self.engine.pool.get(task_id)
        if live is not None:
            return live.to_dict()
        store, conn = self.node.status, self.node.conn
        if store is None:
            return None
        if conn is None or not conn.connected:
            raise NotConnected("NATS is not connected: the task's status cannot be read now")
        try:
            with _unavailable("reading the task's status"):
                record = await store.get(task_id)
        except ValueError:
            return None  # not a possible task id (the KV key check refused it): no such task
        if record is not None and record.get("status") in TERMINAL:
            self._terminal.set(task_id, record)
        return record

    async def get(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        """The latest record of the task, when it belongs to `tenant`."""
        record = await self._record(task_id)
        if record is None or record.get("tenant", "default") != tenant:
            return None
        return _view(record, task_id)

    async def wait(self, task_id: str, *, tenant: str, timeout: float) -> Mapping[str, Any] | None:
        """Waits up to `timeout` for a terminal record; returns the latest one either way."""
        record = await self._record(task_id)
        if record is None or record.get("tenant", "default") != tenant:
            return None
        store = self.node.status
        if record.get("status") not in TERMINAL and store is not None:
            try:
                record = await within(store.wait(task_id), timeout)
            except (TimeoutError, NatsError):
                record = await self._record(task_id) or record
            if record.get("status") in TERMINAL:
                self._terminal.set(task_id, record)
        return _view(record, task_id)

    async def cancel(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        """Cancels the task wherever it is: here, on another instance, or still in the stream."""
        record = await self._record(task_id)
        if record is None or record.get("tenant", "default") != tenant:
            return None
        if record.get("status") in TERMINAL:
            return _view(record, task_id)
        if not self.engine.cancel(task_id):
            conn = self.node.conn
            if conn is None or not conn.connected:
                raise NotConnected("NATS is not connected: cannot broadcast the cancellation")
            with _unavailable("broadcasting the cancellation"):
                await conn.nc.publish(CANCEL_SUBJECT, task_id.encode())
        return await self.wait(task_id, tenant=tenant, timeout=2.0)

    def on_cancel_broadcast(self, task_id: str) -> None:
        """Handles a cancellation broadcast: cancel it if live here, else refuse it when fetched."""
        if not self.engine.cancel(task_id):
            self.cancelled.add(task_id)

    async def list_dead(self, *, tenant: str | None, limit: int) -> Sequence[Mapping[str, Any]]:
        """Dead tasks this instance saw, newest first (one tenant's, or all for the admin)."""
        with _unavailable("reading dead tasks"):
            tasks = await self.engine.dead(limit)
        out = [t.to_dict() for t in tasks]
        return [t for t in out if tenant is None or t.get("tenant", "default") == tenant]

    async def replay(self, task_id: str, *, tenant: str | None) -> Mapping[str, Any] | None:
        """Submits a dead task again as a new task (same type, payload and tenant)."""
        record = await self._record(task_id)
        if record is None or record.get("status") != "dead":
            return None
        owner = str(record.get("tenant", "default"))
        if tenant is not None and owner != tenant:
            return None
        request = SubmitTask(type=str(record["type"]), payload=record.get("payload"))
        return await self.submit(request, tenant=owner, traceparent=None)

    # --- runtime ---------------------------------------------------------------------------------

    def runtime_info(self) -> Mapping[str, Any]:
        """Instance, version, workers, queue, breakers, cache, uptime."""
        snap = self.engine.metrics_snapshot()
        conn = self.node.conn
        return {
            "instance": self.instance_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "workers": {
                "count": snap["workers"],
                "busy": snap["busy"],
                "min": snap["workers_min"],
                "max": snap["workers_max"],
            },
            "queue": {"depth": snap["queued"], "capacity": snap["capacity"], "scheduled": snap["scheduled"]},
            "breakers": snap["breakers"],
            "cache": None if self.cache is None else self.cache.health(),
            "nats": {"connected": bool(conn is not None and conn.connected)},
        }

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        """Delegates to the service's readiness check."""
        return self._readiness()

    def breakers(self) -> Sequence[Mapping[str, Any]]:
        """Every breaker of the engine and the cache, with its metrics."""
        out: list[Mapping[str, Any]] = [
            {"name": name, **dict(b.metrics())} for name, b in sorted(self.engine.pool.breakers.items())
        ]
        if self.cache is not None:
            out.extend({"name": b.name, **dict(b.metrics())} for b in self.cache.breakers())
        return out

    def _breaker(self, name: str) -> Any:
        breaker = self.engine.pool.breakers.get(name)
        if breaker is None and self.cache is not None:
            breaker = next((b for b in self.cache.breakers() if b.name == name), None)
        return breaker

    def reset_breaker(self, name: str) -> bool:
        """Closes the named breaker."""
        breaker = self._breaker(name)
        if breaker is None:
            return False
        breaker.reset()
        return True

    def open_breaker(self, name: str) -> bool:
        """Forces the named breaker open (it half-opens after its wait)."""
        breaker = self._breaker(name)
        if breaker is None:
            return False
        breaker.force_open()
        return True

    async def cache_stats(self) -> Mapping[str, Any]:
        """The cache's figures per level."""
        if self.cache is None:
            return {"enabled": False}
        return dict(self.cache.metrics_snapshot())

    async def cache_flush(self, *, tenant: str | None) -> int:
        """Empties one tenant's cache namespace (or every namespace) at every level and instance.

        Returns the entries removed here (`Cache.flush` counts L1, L3 and Redis). Without a tenant,
        the terminal-status cache of this instance is emptied too.

        Raises:
            ValueError: `tenant` is not a valid namespace.
        """
        removed = 0
        if tenant is None:
            removed = len(self._terminal)
            self._terminal.clear()
        if self.cache is not None:
            removed += await self.cache.flush(tenant)
        return removed

    def set_log_level(self, level: str) -> None:
        """Changes the log level at run time."""
        set_level(level)

    async def drain(self) -> None:
        """Starts a graceful drain (readiness false, intake stops)."""
        self._on_drain()
        await asyncio.sleep(0)
