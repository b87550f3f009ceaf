from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from hulk.messaging.connection import NatsConnection
from hulk.messaging.engine_adapters import EngineDelivery, NatsEventSink, NatsTaskStore, event_kind_of
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.intake import NatsDelivery
from hulk.messaging.kvstore import NatsStatusStore
from hulk.messaging.outbox import Outbox
from hulk.messaging.publisher import EventPublisher, TaskProducer
from hulk.messaging.streams import STREAM_TASKS
from tests.integration.messaging.helpers import eventually, stream_drained
from tests.integration.messaging.test_intake import dead_letters, make_intake


@dataclass
class Err:
    type: str
    message: str


@dataclass
class FakeTask:
    """The attributes of an engine task the adapters read."""

    id: str
    type: str = "t"
    tenant: str = "default"
    attempt: int = 1
    status: str = "queued"
    error: Err | None = None
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FakeTask:
        err = data.get("error")
        return cls(**{**data, "error": Err(**err) if err else None})


def test_event_kinds() -> None:
    assert event_kind_of(None, "queued") == "created"
    assert event_kind_of("queued", "running") == "started"
    assert event_kind_of("running", "succeeded") == "completed"
    assert event_kind_of("running", "dead") == "failed"
    assert event_kind_of("running", "weird") == "updated"


async def test_sink_and_store(conn: NatsConnection, tmp_path: Path) -> None:
    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    sink = NatsEventSink(pub)
    kv = NatsStatusStore(conn, ttl=60, publisher=pub)
    await kv.start()
    store = NatsTaskStore(kv, FakeTask.from_dict)
    a = FakeTask("a1", status="succeeded", result=3)
    b = FakeTask("b1", status="dead", error=Err("ValueError", "boom"))
    events = [(a, None, "queued", 1.0), (a, "running", "succeeded", 2.0), (b, "running", "dead", 2.0)]
    sink.publish(events)
    store.record(events)
    sink.publish([])
    await sink.flush()
    await store.flush()
    assert (await store.wait("a1", timeout=5)).result == 3
    got = await store.get("b1")
    assert got is not None
    assert got.error == Err("ValueError", "boom")
    assert await store.get("zz") is None
    assert [t.id for t in await store.dead()] == ["b1"]
    await pub.flush()
    sub = await conn.js.pull_subscribe("hulk.task.*", stream="HULK_ENGINE_EVENTS")
    kinds = {m.subject: orjson.loads(m.data) for m in await sub.fetch(3, timeout=5)}
    assert kinds["hulk.task.failed"][0]["error"] == "ValueError: boom"
    assert kinds["hulk.task.completed"][0]["task_id"] == "a1"
    assert kinds["hulk.task.created"][0]["task_id"] == "a1"
    await pub.close()


async def test_engine_delivery_settles(conn: NatsConnection) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def work(d: NatsDelivery) -> None:
        ed = EngineDelivery(d)
        seen.append(d.attempt)
        await ed.in_progress()
        task = FakeTask(d.task.id, status="dead", error=Err("KeyError", "k"))
        if d.task.id == "ok":
            ed.on_terminal(FakeTask("ok", status="succeeded"))
            done.set()
        elif d.attempt == 1:
            ed.on_retry(task, 0.01)
        else:
            ed.on_terminal(task)

    intake = make_intake(conn, work)
    await intake.start()
    producer = TaskProducer(conn)
    await producer.submit(TaskEnvelope(type="t", id="die"))
    letters = await dead_letters(conn, "hulk.errors.dead.t", 1)
    assert letters[0][1]["Hulk-Last-Error"] == "KeyError: k"
    await producer.submit(TaskEnvelope(type="t", id="ok"))
    await asyncio.wait_for(done.wait(), 10)
    await eventually(lambda: intake.owned == 0, 10)

    await stream_drained(conn, STREAM_TASKS)
    assert seen[:2] == [1, 2]
    await intake.stop()


async def test_real_engine_fed_from_nats(conn: NatsConnection, tmp_path: Path) -> None:
    from hulk.engine import EngineConfig, Hulk
    from hulk.engine.config import BackoffPolicy
    from hulk.engine.task import Task
    from hulk.messaging.intake import Intake
    from hulk.messaging.streams import intake_consumer_config
    from hulk.service.bridge import CancelledIds, EngineIntake

    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    kv = NatsStatusStore(conn, ttl=60, publisher=pub)
    await kv.start()
    app = Hulk(EngineConfig(workers=4), store=NatsTaskStore(kv, Task.from_dict), events=NatsEventSink(pub))

    @app.task("add")
    async def add(payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    @app.task("flaky", retries=2, backoff=BackoffPolicy(base=0.01, max_delay=0.02))
    async def flaky(payload: Any) -> None:
        raise ValueError("nope")

    await app.start()
    intake = Intake(
        conn,
        EngineIntake(app, CancelledIds()),
        slots=8,
        capacity=app.pool.free_slots,
        consumer_config=intake_consumer_config(ack_wait=5, max_deliver=5, max_ack_pending=8),
        max_attempts=4,
        heartbeat=0.25,
        pull_expires=2.0,
    )
    await intake.start()
    try:
        producer = TaskProducer(conn)
        await producer.submit_many([TaskEnvelope(type="add", id=f"x{i}", payload={"a": i, "b": 1}) for i in range(20)])
        await producer.submit(TaskEnvelope(type="flaky", id="f1"))
        await producer.submit(TaskEnvelope(type="nosuch", id="n1"))
        for i in range(20):
            done = await app.store.wait(f"x{i}", timeout=10)
            assert done.result == i + 1
        dead = await app.store.wait("f1", timeout=15)
        assert str(dead.status) == "dead"
        assert dead.attempt == 3
        letters = await dead_letters(conn, "hulk.errors.dead.flaky", 1)
        assert "ValueError" in letters[0][1]["Hulk-Last-Error"]
        unknown = await dead_letters(conn, "hulk.errors.dead.nosuch", 1)
        assert unknown[0][1]["Hulk-Dead-Reason"] == "unknown task type"
        await stream_drained(conn, STREAM_TASKS)
    finally:
        await intake.stop()
        await app.stop()
        await pub.close()


async def test_status_records_go_out_as_one_acknowledged_group(conn: NatsConnection, tmp_path: Path) -> None:
    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    kv = NatsStatusStore(conn, ttl=60, publisher=pub)
    await kv.start()
    replies_before = pub._pipeline._n  # one reply token per acknowledgement asked for
    safe = await kv.put_many_nowait([(f"g{i}", {"status": "succeeded", "i": i}) for i in range(300)])
    assert safe is not None
    await safe
    assert pub._pipeline._n == replies_before + 1  # 300 records, one acknowledgement
    await kv.put_many_nowait([])
    await pub.flush()
    assert (pub.published, pub.outboxed) == (300, 0)
    for i in (0, 150, 299):
        assert await kv.get(f"g{i}") == {"status": "succeeded", "i": i}
    await pub.close()


async def test_task_records_are_stored_as_their_to_dict(conn: NatsConnection, tmp_path: Path) -> None:
    from hulk.engine.task import Task, TaskStatus

    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    kv = NatsStatusStore(conn, ttl=60, publisher=pub)
    await kv.start()
    done = Task("email.send", {"to": "a@b.c", "n": [1, 2.5]}, id="rec-1")
    done.status, done.result, done.finished_at = TaskStatus.SUCCEEDED, {"ok": True}, 1796471848.25
    safe = await kv.put_tasks_nowait([done, FakeTask("rec-2", status="dead")])  # native, then orjson
    assert safe is not None
    await safe
    assert await kv.get("rec-1") == orjson.loads(orjson.dumps(done.to_dict()))
    assert (await kv.get("rec-2") or {})["status"] == "dead"
    bad = Task("email.send", None, id="rec-3")
    bad.id = "not a key"
    with pytest.raises(ValueError, match="valid KV key"):
        await kv.put_tasks_nowait([bad])
    await pub.close()


async def test_group_acknowledgement_failure_fails_the_group(conn: NatsConnection) -> None:
    from hulk.messaging.pipeline import AckPipeline, PublishError

    pipe = AckPipeline(conn, timeout=5.0, max_pending=4)
    kv = NatsStatusStore(conn, ttl=60)
    await kv.start()
    # Larger than the whole window: goes out alone, and the window is free again once it settles.
    stored = await pipe.publish_group([(f"$KV.hulk_status.w{i}", b"{}") for i in range(10)])
    assert (await stored)["stream"] == "KV_hulk_status"
    assert pipe.pending == 0
    # The last message has no stream: the group's one acknowledgement fails, so the caller re-sends all.
    failed = await pipe.publish_group([("$KV.hulk_status.x1", b"{}"), ("no.stream.here", b"{}")])
    with pytest.raises(PublishError):
        await failed
    with pytest.raises(ValueError, match="at least one"):
        await pipe.publish_group([])
    await pipe.close()


async def test_pipeline_window_waits_for_room(conn: NatsConnection) -> None:
    from hulk.messaging.pipeline import AckPipeline

    pipe = AckPipeline(conn, timeout=5.0, max_pending=8)
    kv = NatsStatusStore(conn, ttl=60)
    await kv.start()
    futs = [await pipe.publish(f"$KV.hulk_status.r{i}", b"{}") for i in range(100)]
    assert pipe.pending <= 8
    assert {(await f)["stream"] for f in futs} == {"KV_hulk_status"}
    await pipe.wait_idle()
    await pipe.close()


async def test_passing_states_are_written_only_for_tasks_still_in_them(conn: NatsConnection, tmp_path: Path) -> None:
    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    kv = NatsStatusStore(conn, ttl=60, publisher=pub)
    await kv.start()
    store = NatsTaskStore(kv, FakeTask.from_dict, defer=0.05)
    quick, slow = FakeTask("q1", status="running"), FakeTask("s1", status="running")
    store.record([(quick, "queued", "running", 1.0), (slow, "queued", "running", 1.0)])
    quick.status = "succeeded"
    store.record([(quick, "running", "succeeded", 2.0)])
    # The slow task's running state shows once the deferral ran out ...
    await eventually(lambda: pub.published >= 2, 5.0)
    running = await store.get("s1")
    assert running is not None
    assert running.status == "running"
    # ... and the quick one cost one write: its terminal record, never a running one.
    await store.flush()
    assert pub.published == 2
    got = await store.get("q1")
    assert got is not None
    assert got.status == "succeeded"
    with pytest.raises(ValueError, match="defer"):
        NatsTaskStore(kv, FakeTask.from_dict, defer=-1)
    await pub.close()


async def test_events_linger_into_one_message_per_kind(conn: NatsConnection, tmp_path: Path) -> None:
    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    sink = NatsEventSink(pub, linger=0.05)
    for i in range(5):
        task = FakeTask(f"e{i}", status="succeeded")
        sink.publish([(task, "running", "succeeded", float(i))])
    await sink.flush()
    await pub.flush()
    assert pub.published == 1
    sub = await conn.js.pull_subscribe("hulk.task.completed", stream="HULK_ENGINE_EVENTS")
    (msg,) = await sub.fetch(1, timeout=5)
    assert [event["task_id"] for event in orjson.loads(msg.data)] == [f"e{i}" for i in range(5)]
    with pytest.raises(ValueError, match="linger"):
        NatsEventSink(pub, linger=-0.1)
    await pub.close()


async def test_publish_many_acknowledges_each_message_on_its_own(conn: NatsConnection) -> None:
    from hulk.messaging.pipeline import AckPipeline, PublishError

    pipe = AckPipeline(conn, timeout=5.0)
    kv = NatsStatusStore(conn, ttl=60)
    await kv.start()
    assert await pipe.publish_many([]) == []
    futs = await pipe.publish_many(
        [
            ("$KV.hulk_status.m1", b"{}", None),
            ("no.stream.here", b"{}", None),
            ("$KV.hulk_status.m2", b"{}", {"Hulk-Test": "1"}),
        ]
    )
    first, refused, last = futs
    assert (await first)["stream"] == "KV_hulk_status"
    with pytest.raises(PublishError):
        await refused
    assert (await last)["seq"] > (await first)["seq"]
    assert pipe.pending == 0
    await pipe.close()
