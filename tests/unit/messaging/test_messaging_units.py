from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from hulk.messaging.intake import _ack_reply_counts
from hulk.messaging.outbox import Outbox, OutboxEntry
from hulk.messaging.pipeline import PublishError
from hulk.messaging.streams import (
    STREAM_ERRORS,
    STREAM_EVENTS,
    STREAM_SCHEDULER,
    STREAM_TASKS,
    StreamSettings,
    stream_configs,
)


def test_outbox_keeps_order_across_restarts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    for i in range(5):
        box.append(f"s.{i}", str(i).encode(), {"i": str(i)})
    box.remove(2)
    box.remove(2)  # already gone: no-op
    box.close()
    again = Outbox(tmp_path / "ob")
    assert len(again) == 4
    assert [e.payload for e in again.entries()] == [b"0", b"2", b"3", b"4"]
    assert [e.seq for e in again.entries(limit=2)] == [1, 3]
    assert again.append("s.5", b"5", {}) == 6
    again.close()


async def test_outbox_replay_stops_at_first_failure(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    for i in range(4):
        box.append("s", str(i).encode(), {})
    seen: list[bytes] = []

    async def flaky(entry: OutboxEntry) -> None:
        if entry.payload == b"2":
            raise ConnectionError("down")
        seen.append(entry.payload)

    with pytest.raises(ConnectionError):
        await box.replay(flaky, batch=2)
    assert seen == [b"0", b"1"]
    assert [e.payload for e in box.entries()] == [b"2", b"3"]

    async def ok(entry: OutboxEntry) -> None:
        seen.append(entry.payload)

    assert await box.replay(ok) == 2
    assert seen == [b"0", b"1", b"2", b"3"]
    assert len(box) == 0
    box.close()


def test_ack_reply_parsing() -> None:
    assert _ack_reply_counts("$JS.ACK.S.C.3.10.9.1700000000000000000.42") == (3, 42)
    assert _ack_reply_counts("$JS.ACK.dom.hash.S.C.2.10.9.1700000000000000000.7.xyz") == (2, 7)
    assert _ack_reply_counts(None) is None
    assert _ack_reply_counts("_INBOX.x") is None
    assert _ack_reply_counts("$JS.ACK.S.C.x.10.9.1.2") is None
    assert _ack_reply_counts("$JS.ACK.S.C") is None


def test_stream_configs_bind_each_subject_once() -> None:
    cfgs = {c.name: c for c in stream_configs(StreamSettings(replicas=3, max_bytes=1 << 30, storage="memory"))}
    assert set(cfgs) == {STREAM_TASKS, STREAM_EVENTS, STREAM_SCHEDULER, STREAM_ERRORS}
    subjects = [s for c in cfgs.values() for s in c.subjects or []]
    assert len(subjects) == len(set(subjects))
    assert all(c.num_replicas == 3 for c in cfgs.values())
    assert cfgs[STREAM_TASKS].max_age == 0
    assert cfgs[STREAM_SCHEDULER].max_msgs_per_subject == 1


def test_publish_error_carries_codes() -> None:
    err = PublishError(503, 10077, "maximum messages exceeded")
    assert err.code == 503
    assert err.err_code == 10077
    assert "maximum messages" in str(err)


class _FakeMsg:
    def __init__(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.subject = subject
        self.data = data
        self.headers = headers


async def test_pipeline_reply_handling() -> None:
    from hulk.messaging.pipeline import AckPipeline

    pipe = AckPipeline(object(), timeout=1.0, max_pending=4)  # type: ignore[arg-type]
    pipe._prefix = "_INBOX.p."
    loop = asyncio.get_running_loop()
    futs: dict[str, asyncio.Future[dict[str, Any]]] = {}
    for token in ("1", "2", "3", "4"):
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        futs[token] = fut
        await pipe._reserve(1)
        pipe._pending[token] = (fut, 10.0 if token != "4" else 0.0, 1)
        pipe._in_flight += 1
    pipe._idle.clear()
    await pipe._on_reply(_FakeMsg("_INBOX.p.1", orjson.dumps({"stream": "S", "seq": 5})))  # type: ignore[arg-type]
    await pipe._on_reply(
        _FakeMsg("_INBOX.p.2", orjson.dumps({"error": {"code": 503, "err_code": 10077, "description": "full"}}))  # type: ignore[arg-type]
    )
    await pipe._on_reply(_FakeMsg("_INBOX.p.3", b"", {"Status": "503"}))  # type: ignore[arg-type]
    await pipe._on_reply(_FakeMsg("_INBOX.p.9", b"{}"))  # type: ignore[arg-type]
    assert futs["1"].result()["seq"] == 5
    assert isinstance(futs["2"].exception(), PublishError)
    assert isinstance(futs["3"].exception(), PublishError)
    assert pipe.sweep(now=1.0) == 1
    assert isinstance(futs["4"].exception(), TimeoutError)
    assert pipe.pending == 0
    await asyncio.wait_for(pipe.wait_idle(), 1)


def test_envelope_carries_task_options() -> None:
    from hulk.messaging.envelope import PoisonMessage, TaskEnvelope

    plain = TaskEnvelope(type="echo", payload=1, id="a1")
    assert set(orjson.loads(plain.body())) == {"id", "type", "tenant", "payload", "created_at"}
    tuned = TaskEnvelope(type="echo", payload=1, id="a2", timeout=1.5, max_retries=0, priority=9)
    back = TaskEnvelope.decode(tuned.body(), tuned.to_headers(trace=False))
    assert (back.timeout, back.max_retries, back.priority) == (1.5, 0, 9)
    for bad, what in (
        ({"timeout": "1s"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"priority": 10}, "priority"),
        ({"priority": "high"}, "priority"),
    ):
        body = orjson.dumps({"id": "p1", "type": "echo", **bad})
        with pytest.raises(PoisonMessage, match=what):
            TaskEnvelope.decode(body, None)
    with pytest.raises(ValueError, match="priority"):
        TaskEnvelope(type="echo", priority=-1)
    for falsy in (0.0, False):
        with pytest.raises(ValueError, match="priority"):
            TaskEnvelope(type="echo", priority=falsy)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="KV key"):
        TaskEnvelope(type="echo", id="has space")
    with pytest.raises(PoisonMessage, match="KV key"):
        TaskEnvelope.decode(b'{"id": ".dot", "type": "echo"}', None)


async def test_a_finished_task_is_acked_only_once_its_record_is_safe() -> None:
    from hulk.messaging.engine_adapters import EngineDelivery, NatsTaskStore

    loop = asyncio.get_running_loop()
    safe: asyncio.Future[None] = loop.create_future()
    written: list[list[str]] = []
    wrote = asyncio.Event()

    class Store:
        async def put_tasks_nowait(self, tasks: list[Any]) -> asyncio.Future[None]:
            written.append([task.id for task in tasks])
            wrote.set()
            return safe

    class Delivery:
        def __init__(self) -> None:
            self.acked = asyncio.Event()

        def ack_nowait(self) -> None:
            self.acked.set()

    class Done:
        id = "t1"
        status = "succeeded"

        def to_dict(self) -> dict[str, Any]:
            return {"id": self.id, "status": self.status}

    store = NatsTaskStore(Store(), dict)  # type: ignore[arg-type]
    delivery = Delivery()
    task = Done()
    EngineDelivery(delivery, store).on_terminal(task)  # type: ignore[arg-type]
    store.record([(task, "running", "succeeded", 1.0)])
    await asyncio.wait_for(wrote.wait(), 5)
    assert written == [["t1"]]
    assert not delivery.acked.is_set()  # the record is on its way, not yet stored
    safe.set_result(None)
    await asyncio.wait_for(delivery.acked.wait(), 5)
    await store.flush()


async def test_one_failing_settlement_leaves_the_others_of_its_group_settled() -> None:
    from hulk.messaging.engine_adapters import NatsTaskStore

    class Store:
        async def put_tasks_nowait(self, tasks: list[Any]) -> None:
            return None

    class Done:
        def __init__(self, task_id: str) -> None:
            self.id = task_id
            self.status = "succeeded"

        def to_dict(self) -> dict[str, Any]:
            return {"id": self.id, "status": self.status}

    settled: list[str] = []

    def boom() -> None:
        raise RuntimeError("connection closed")

    store = NatsTaskStore(Store(), dict)  # type: ignore[arg-type]
    store.settle_after_record("a", boom)
    store.settle_after_record("b", lambda: settled.append("b"))
    store.record([(Done("a"), "running", "succeeded", 1.0), (Done("b"), "running", "succeeded", 1.0)])
    await store.flush()
    assert settled == ["b"]
