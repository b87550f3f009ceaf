"""`hulk.service.backend`: the HTTP API's backend in service mode, with NATS replaced by small fakes.

The real NATS paths are covered by tests/integration/service; here are the decisions the backend makes
on its own: ids, first records, tenancy, errors mapped for HTTP, bounded waits, runtime and admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import orjson
import pytest
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout

from hulk.engine import EngineConfig, Hulk, PayloadError, UnknownTaskType
from hulk.http.models import SubmitTask
from hulk.messaging.kvstore import WRONG_LAST_SEQUENCE
from hulk.messaging.node import MessagingNode
from hulk.messaging.pipeline import PublishError
from hulk.messaging.publisher import SubmitResult
from hulk.observability import get_level, set_level
from hulk.service.backend import NotConnected, ServiceBackend, _unavailable, task_id_for, within
from hulk.service.bridge import CancelledIds

_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


class FakeStatus:
    bucket = "hulk_status"

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.fail: Exception | None = None
        self.create_fail: Exception | None = None
        self.changed = asyncio.Event()

    async def create_nowait(self, task_id: str, record: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.create_fail is not None:
            fut.set_exception(self.create_fail)
        elif task_id in self.records:
            fut.set_exception(PublishError(400, WRONG_LAST_SEQUENCE, "wrong last sequence: 1"))
        else:
            self.records[task_id] = orjson.loads(orjson.dumps(record))
            fut.set_result({"stream": "KV_hulk_status", "seq": len(self.records)})
        return fut

    async def delete(self, task_id: str) -> None:
        self.records.pop(task_id)

    def put(self, task_id: str, record: dict[str, Any]) -> None:
        """A write by the engine, on any instance."""
        self.records[task_id] = record
        self.changed.set()

    async def get(self, task_id: str) -> dict[str, Any] | None:
        if not _KEY.match(task_id):
            raise ValueError(f"task_id must be a valid KV key, got {task_id!r}")
        if self.fail is not None:
            raise self.fail
        return self.records.get(task_id)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        while self.records.get(task_id, {}).get("status") not in ("succeeded", "dead", "cancelled"):
            self.changed.clear()
            await self.changed.wait()
        return self.records[task_id]


class FakeNc:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.on_publish: Callable[[str, bytes], None] = lambda subject, data: None

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, data))
        self.on_publish(subject, data)


class FakeConn:
    def __init__(self) -> None:
        self.connected = True
        self.nc = FakeNc()


class FakeProducer:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.envelopes: list[Any] = []
        self.fail: Exception | None = None

    async def submit(self, envelope: Any) -> SubmitResult:
        if self.fail is not None:
            raise self.fail
        self.envelopes.append(envelope)
        duplicate = envelope.msg_id in self.seen
        self.seen.append(envelope.msg_id)
        return SubmitResult(envelope.id, len(self.seen), duplicate)


class FakeNode:
    def __init__(self) -> None:
        self.conn = FakeConn()
        self.producer = FakeProducer()
        self.status = FakeStatus()


class FakeBreaker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "closed"

    def metrics(self) -> dict[str, Any]:
        return {"state": self.state}

    def reset(self) -> None:
        self.state = "closed"

    def force_open(self) -> None:
        self.state = "open"


class FakeCache:
    def __init__(self) -> None:
        self.l2 = FakeBreaker("cache-l2")
        self._l1: dict[str, int] = {"a": 1, "b": 2}

    def breakers(self) -> list[FakeBreaker]:
        return [self.l2]

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def metrics_snapshot(self) -> dict[str, Any]:
        return {"mode": "l1"}

    async def flush(self, namespace: str | None = None) -> int:
        if namespace is not None and not namespace.isidentifier():
            raise ValueError(f"namespace must be ..., got {namespace!r}")
        self.flushed = namespace
        removed = len(self._l1)
        self._l1.clear()
        return removed


class Harness:
    def __init__(self, engine: Hulk, *, cache: FakeCache | None = None) -> None:
        self.engine = engine
        self.node = FakeNode()
        self.drains = 0
        self.cancelled = CancelledIds()
        self.backend = ServiceBackend(
            engine=engine,
            node=cast(MessagingNode, self.node),
            cache=cache,
            readiness=lambda: (True, {"nats": True}),
            instance_id="i-1",
            on_drain=self._drain,
            cancelled=self.cancelled,
        )

    def _drain(self) -> None:
        self.drains += 1


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    engine = Hulk(EngineConfig(workers=2, max_retries=0, max_payload_bytes=64))
    await engine.start()
    try:
        yield Harness(engine, cache=FakeCache())
    finally:
        await engine.stop(5)


# --- ids and helpers --------------------------------------------------------------------------------


def test_task_ids() -> None:
    assert task_id_for("a", "k") == task_id_for("a", "k")
    assert task_id_for("a", "k") != task_id_for("b", "k")
    assert task_id_for("a", None) != task_id_for("a", None)
    assert re.fullmatch(r"[0-9a-f]{32}", task_id_for("a", "k"))
    # Without a key: sortable UUIDv7 strings, like the engine's ids.
    first, second = task_id_for("a", None), task_id_for("a", None)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first)
    assert first < second


async def test_within_returns_the_result_or_times_out() -> None:
    assert await within(asyncio.sleep(0, "done"), 1.0) == "done"
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(10), 0.01)


async def test_within_returns_on_time_even_when_the_awaited_code_swallows_a_cancellation() -> None:
    stopped = asyncio.Event()

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what a racing inner wait_for does on 3.11
            await asyncio.sleep(10)
        try:
            await asyncio.sleep(10)
        finally:
            stopped.set()

    with pytest.raises(TimeoutError):
        await within(stubborn(), 0.01)
    assert stopped.is_set()


def test_nats_failures_become_not_connected() -> None:
    for error in (ConnectionClosedError(), NatsTimeout(), TimeoutError("late")):
        with pytest.raises(NotConnected, match="while doing it"), _unavailable("doing it"):
            raise error
    with pytest.raises(ValueError, match="other"), _unavailable("doing it"):
        raise ValueError("other")


# --- submit -----------------------------------------------------------------------------------------


async def test_submit_refuses_what_cannot_run(h: Harness) -> None:
    with pytest.raises(UnknownTaskType):
        await h.backend.submit(SubmitTask(type="nope"), tenant="t", traceparent=None)
    with pytest.raises(PayloadError, match="more than the 64 allowed"):
        await h.backend.submit(SubmitTask(type="echo", payload="x" * 100), tenant="t", traceparent=None)
    h.node.conn.connected = False
    with pytest.raises(NotConnected):
        await h.backend.submit(SubmitTask(type="echo"), tenant="t", traceparent=None)
    h.node.conn.connected = True
    h.node.producer.fail = NatsTimeout()
    with pytest.raises(NotConnected, match="submitting the task"):
        await h.backend.submit(SubmitTask(type="echo"), tenant="t", traceparent=None)


async def test_submit_writes_the_first_record_only_if_there_is_none(h: Harness) -> None:
    accepted = await h.backend.submit(SubmitTask(type="echo", idempotency_key="k"), tenant="t", traceparent="tp")
    task_id = str(accepted["id"])
    assert accepted == {"id": task_id, "status": "queued"}
    assert h.node.status.records[task_id]["status"] == "queued"
    # The engine (anywhere) finished it; a duplicate submission must leave that record alone.
    h.node.status.records[task_id] = {"id": task_id, "tenant": "t", "status": "succeeded"}
    again = await h.backend.submit(SubmitTask(type="echo", idempotency_key="k"), tenant="t", traceparent=None)
    assert again == {"id": task_id, "status": "succeeded"}
    assert h.node.status.records[task_id]["status"] == "succeeded"


async def test_the_same_key_in_two_tenants_is_two_messages(h: Harness) -> None:
    a = await h.backend.submit(SubmitTask(type="echo", idempotency_key="k"), tenant="a", traceparent=None)
    b = await h.backend.submit(SubmitTask(type="echo", idempotency_key="k"), tenant="b", traceparent=None)
    assert a["id"] != b["id"]
    assert b["status"] == "queued"
    assert h.node.producer.seen == [a["id"], b["id"]]


async def test_a_lost_first_record_does_not_refuse_the_task(h: Harness) -> None:
    for failure in (TimeoutError("no ack"), PublishError(503, 10077, "full")):
        h.node.status.create_fail = failure
        accepted = await h.backend.submit(SubmitTask(type="echo"), tenant="t", traceparent=None)
        assert accepted["status"] == "queued"
        assert str(accepted["id"]) in [e.id for e in h.node.producer.envelopes]


async def test_a_refused_task_leaves_no_record(h: Harness) -> None:
    h.node.producer.fail = NatsTimeout()
    with pytest.raises(NotConnected, match="submitting the task"):
        await h.backend.submit(SubmitTask(type="echo", idempotency_key="k1"), tenant="t", traceparent=None)
    assert h.node.status.records == {}
    # A refused duplicate must not remove the record of the task accepted first.
    h.node.producer.fail = None
    first = await h.backend.submit(SubmitTask(type="echo", idempotency_key="k1"), tenant="t", traceparent=None)
    h.node.producer.fail = NatsTimeout()
    with pytest.raises(NotConnected):
        await h.backend.submit(SubmitTask(type="echo", idempotency_key="k1"), tenant="t", traceparent=None)
    assert h.node.status.records[str(first["id"])]["status"] == "queued"


# --- reads ------------------------------------------------------------------------------------------


async def test_reads_respect_tenants(h: Harness) -> None:
    h.node.status.records["x1"] = {"id": "x1", "tenant": "a", "status": "queued"}
    assert (await h.backend.get("x1", tenant="a") or {})["status"] == "queued"
    assert await h.backend.get("x1", tenant="b") is None
    assert await h.backend.wait("x1", tenant="b", timeout=1) is None
    assert await h.backend.cancel("x1", tenant="b") is None
    assert await h.backend.get("unknown", tenant="a") is None
    assert await h.backend.get("not a key!", tenant="a") is None


async def test_wait_is_bounded_and_caches_terminal_records(h: Harness) -> None:
    h.node.status.records["x2"] = {"id": "x2", "tenant": "t", "status": "running"}
    view = await h.backend.wait("x2", tenant="t", timeout=0.01)
    assert (view or {})["status"] == "running"
    h.node.status.put("x2", {"id": "x2", "tenant": "t", "status": "succeeded", "result": 1})
    view = await h.backend.wait("x2", tenant="t", timeout=5)
    assert (view or {})["status"] == "succeeded"
    # Now answered from this instance's memory, even with NATS away.
    h.node.conn.connected = False
    assert (await h.backend.get("x2", tenant="t") or {})["result"] == 1
    with pytest.raises(NotConnected):
        await h.backend.get("other", tenant="t")


async def test_read_failures_are_not_connected(h: Harness) -> None:
    h.node.status.fail = ConnectionClosedError()
    with pytest.raises(NotConnected, match="reading the task's status"):
        await h.backend.get("x3", tenant="t")


async def test_live_tasks_are_read_from_the_engine(h: Harness) -> None:
    task = h.engine.submit("sleep", {"ms": 5000}, tenant="t")
    view = await h.backend.get(task.id, tenant="t")
    assert (view or {})["status"] in ("queued", "running")
    # What the engine's store writes behind, on NATS, once the task is cancelled.
    h.node.status.records[task.id] = {"id": task.id, "tenant": "t", "status": "cancelled"}
    cancelled = await h.backend.cancel(task.id, tenant="t")
    assert (cancelled or {})["status"] == "cancelled"
    assert (await h.engine.wait(task.id, timeout=5)).status == "cancelled"
    assert h.node.conn.nc.published == []  # cancelled here: nothing to broadcast


async def test_cancel_elsewhere_is_broadcast(h: Harness) -> None:
    h.node.status.records["x4"] = {"id": "x4", "tenant": "t", "status": "queued"}

    # The instance holding x4 hears the broadcast, cancels it and records that.
    h.node.conn.nc.on_publish = lambda subject, data: h.node.status.put(
        data.decode(), {"id": data.decode(), "tenant": "t", "status": "cancelled"}
    )
    view = await h.backend.cancel("x4", tenant="t")
    assert (view or {})["status"] == "cancelled"
    assert h.node.conn.nc.published == [("hulk.control.cancel", b"x4")]
    # Cancelling a finished task answers its final state without broadcasting again.
    assert (await h.backend.cancel("x4", tenant="t") or {})["status"] == "cancelled"
    assert len(h.node.conn.nc.published) == 1
    h.node.status.records["x5"] = {"id": "x5", "tenant": "t", "status": "queued"}
    h.node.conn.connected = False
    h.backend._terminal.clear()
    with pytest.raises(NotConnected):
        await h.backend.cancel("x5", tenant="t")


def test_a_cancel_broadcast_for_a_task_not_here_is_remembered(h: Harness) -> None:
    h.backend.on_cancel_broadcast("elsewhere")
    assert h.cancelled.pop("elsewhere")


async def test_dead_tasks_and_replay(h: Harness) -> None:
    dead = h.engine.submit("fail", None, tenant="a")
    await h.engine.wait(dead.id, timeout=5)
    assert [t["id"] for t in await h.backend.list_dead(tenant="a", limit=10)] == [dead.id]
    assert await h.backend.list_dead(tenant="b", limit=10) == []
    assert len(await h.backend.list_dead(tenant=None, limit=10)) == 1
    h.node.status.records[dead.id] = {**dead.to_dict(), "status": "dead"}
    assert await h.backend.replay(dead.id, tenant="b") is None
    replayed = await h.backend.replay(dead.id, tenant=None)
    assert replayed is not None
    assert replayed["id"] != dead.id
    assert h.node.status.records[str(replayed["id"])]["tenant"] == "a"
    h.node.status.records["alive"] = {"id": "alive", "tenant": "a", "status": "running", "type": "echo"}
    assert await h.backend.replay("alive", tenant="a") is None


# --- runtime and admin ------------------------------------------------------------------------------


async def test_runtime_breakers_cache_and_drain(h: Harness) -> None:
    info = h.backend.runtime_info()
    assert info["instance"] == "i-1"
    assert info["nats"] == {"connected": True}
    assert info["workers"]["max"] == 2
    assert info["cache"] == {"status": "ok"}
    assert h.backend.readiness() == (True, {"nats": True})
    assert [b["name"] for b in h.backend.breakers()] == ["cache-l2"]
    assert h.backend.open_breaker("cache-l2")
    assert h.backend.breakers()[0]["state"] == "open"
    assert h.backend.reset_breaker("cache-l2")
    assert not h.backend.reset_breaker("nope")
    assert not h.backend.open_breaker("nope")
    assert await h.backend.cache_stats() == {"mode": "l1"}
    h.backend._terminal.set("t1", {"status": "succeeded"})
    # One tenant: its namespace at every level (Cache.flush), the task records stay.
    assert await h.backend.cache_flush(tenant="t") == 2
    assert len(h.backend._terminal) == 1
    # Everything: the namespaces and this instance's terminal-status records.
    assert await h.backend.cache_flush(tenant=None) == 1
    assert len(h.backend._terminal) == 0
    with pytest.raises(ValueError, match="namespace"):
        await h.backend.cache_flush(tenant="bad tenant")
    await h.backend.drain()
    assert h.drains == 1


async def test_without_a_cache() -> None:
    harness = Harness(Hulk(EngineConfig(workers=1)))
    assert await harness.backend.cache_stats() == {"enabled": False}
    assert await harness.backend.cache_flush(tenant="t") == 0
    assert harness.backend.runtime_info()["cache"] is None
    assert harness.backend.breakers() == []


def test_log_level_at_run_time(h: Harness) -> None:
    before = get_level()
    try:
        h.backend.set_log_level("debug")
        assert get_level() == "debug"
    finally:
        set_level(before)
