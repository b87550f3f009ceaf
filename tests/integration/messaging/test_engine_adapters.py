from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hulk.messaging.connection import NatsConnection
from hulk.messaging.engine_adapters import EngineDelivery, NatsEventSink, NatsTaskStore, event_kind_of
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.intake import NatsDelivery
from hulk.messaging.kvstore import NatsStatusStore
from hulk.messaging.outbox import Outbox
from hulk.messaging.publisher import EventPublisher, TaskProducer
from hulk.messaging.streams import STREAM_TASKS
from tests.integration.messaging.helpers import eventually
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
    si = await conn.js.stream_info(STREAM_TASKS)
    assert si.state.messages == 0
    assert seen[:2] == [1, 2]
    await intake.stop()
