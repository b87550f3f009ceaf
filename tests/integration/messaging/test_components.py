from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from hulk.messaging.connection import ConnectionSettings, NatsConnection, backoff_delay
from hulk.messaging.embedded import NatsServerError, NatsServerProcess, find_nats_server
from hulk.messaging.envelope import PoisonMessage, TaskEnvelope
from hulk.messaging.heartbeat import HeartbeatMonitor, HeartbeatPublisher
from hulk.messaging.kvstore import NatsStatusStore
from hulk.messaging.node import MessagingNode, NodeSettings, SimpleExecutor
from hulk.messaging.outbox import Outbox
from hulk.messaging.publisher import EventPublisher
from hulk.messaging.streams import dead_letter_subject, event_subject, intake_subject
from tests.integration.messaging.conftest import ConnFactory
from tests.integration.messaging.helpers import eventually
from tests.nats_servers import NatsServer


async def test_status_store_get_wait_delete(conn: NatsConnection, tmp_path: Path) -> None:
    store = NatsStatusStore(conn, bucket="st_test", ttl=60)
    await store.start()
    await store.start()  # binds to the existing bucket
    assert await store.get("nope") is None
    await store.put("a1", {"status": "running"})
    assert await store.get("a1") == {"status": "running"}
    waiter = asyncio.create_task(store.wait("a1", timeout=10))
    await asyncio.sleep(0)
    await store.put_nowait("a1", {"status": "succeeded", "result": 42})
    assert (await waiter)["result"] == 42
    assert (await store.wait("a1", timeout=1))["status"] == "succeeded"
    with pytest.raises(TimeoutError):
        await store.wait("never", timeout=0.2)
    await store.delete("a1")
    assert await store.get("a1") is None
    with pytest.raises(ValueError, match="task_id"):
        await store.get("bad key")
    with pytest.raises(ValueError, match="ttl"):
        NatsStatusStore(conn, ttl=0)
    with pytest.raises(RuntimeError):
        _ = NatsStatusStore(conn).kv
    pub = EventPublisher(conn, Outbox(tmp_path / "ob"))
    pub.start()
    durable = NatsStatusStore(conn, bucket="st_test", ttl=60, publisher=pub)
    await durable.start()
    await durable.put_nowait("b1", {"status": "dead"})
    assert (await durable.wait("b1", timeout=5))["status"] == "dead"
    await pub.close()


async def test_heartbeats_and_gone_instances(make_conn: ConnFactory, conn: NatsConnection) -> None:
    gone: list[str] = []
    monitor = HeartbeatMonitor(conn, missed=3, on_gone=gone.append)
    await monitor.start()
    beater = HeartbeatPublisher(
        await make_conn(), instance_id="h1", version="1.0", interval=0.1, stats=lambda: {"queue_depth": 3}
    )
    beater.start()
    await eventually(lambda: monitor.alive() == ["h1"], 5)
    assert monitor.instances["h1"].beat["queue_depth"] == 3
    assert monitor.instances["h1"].beat["version"] == "1.0"
    await beater.stop()
    await eventually(lambda: gone == ["h1"], 5)
    assert monitor.alive() == []
    assert monitor.sweep() == []  # reported once
    await conn.nc.publish("hulk.runtime.health", b"not json")
    await monitor.stop()
    with pytest.raises(ValueError, match="interval"):
        HeartbeatPublisher(conn, instance_id="x", version="1", interval=0)


async def ok(payload: Any) -> Any:
    return {"echo": payload}


async def boom(payload: Any) -> Any:
    raise ValueError("boom")


async def test_node_embedded_end_to_end(tmp_path: Path) -> None:
    executor = SimpleExecutor({"ok": ok, "boom": boom}, backoff_base=0.01)
    node = MessagingNode(
        NodeSettings(
            instance_id="e1",
            data_dir=tmp_path / "node",
            embedded=True,
            slots=4,
            ack_wait=5,
            max_attempts=2,
            heartbeat_interval=0.2,
            lease_ttl=1.0,
        ),
        executor,
        stats=lambda: {"breakers": {"default": "closed"}},
    )
    executor.bind(node)
    await node.start()
    try:
        assert node.server is not None
        assert node.server.running
        await eventually(lambda: node.ready, 10)
        assert node.producer is not None
        assert node.status is not None
        await node.producer.submit(TaskEnvelope(type="ok", id="e-ok", payload=7))
        await node.producer.submit(TaskEnvelope(type="boom", id="e-boom"))
        await node.producer.submit(TaskEnvelope(type="unknown", id="e-unknown"))
        assert (await node.status.wait("e-ok", timeout=10))["result"] == {"echo": 7}
        await node.producer.submit_batch([TaskEnvelope(type="ok", id=f"e-b{i}", payload=i) for i in range(5)])
        for i in range(5):
            assert (await node.status.wait(f"e-b{i}", timeout=10))["result"] == {"echo": i}
        dead = await node.status.wait("e-boom", timeout=10)
        assert dead["status"] == "dead"
        assert dead["attempt"] == 2
        assert node.scheduler is not None
        await eventually(lambda: node.scheduler is not None and node.scheduler.is_leader, 10)
        stats = node._beat_stats()
        assert stats["breakers"] == {"default": "closed"}
        assert stats["leader"] is True
        assert await node.drain(5)
        await executor.wait_idle()
    finally:
        await node.stop()
    assert node.server is not None
    assert not node.server.running


async def test_events_go_to_the_outbox_while_disconnected(
    nats_server: NatsServer, conn: NatsConnection, tmp_path: Path
) -> None:
    pub = EventPublisher(conn, Outbox(tmp_path / "ob"), ack_timeout=1.0)
    pub.start()
    await pub.emit("created", task_id="x1", task_type="t", tenant="d", attempt=1)
    await pub.flush(5)
    await nats_server.stop_async()
    await eventually(lambda: not conn.connected, 10)
    for i in range(5):
        await pub.emit("completed", task_id=f"y{i}", task_type="t", tenant="d", attempt=1, n=i)
    assert pub.backlog == 5
    await nats_server.start_async()
    await conn.wait_connected(20)
    await pub.flush(20)
    assert pub.backlog == 0
    assert pub.replayed == 5
    sub = await conn.js.pull_subscribe("hulk.task.completed", stream="HULK_ENGINE_EVENTS")
    msgs = await sub.fetch(5, timeout=5)
    assert [orjson.loads(m.data)["n"] for m in msgs] == [0, 1, 2, 3, 4]
    await pub.close()


async def test_connect_gives_up_after_timeout() -> None:
    conn = NatsConnection(ConnectionSettings(urls=("nats://127.0.0.1:1",), reconnect_base=0.01, reconnect_max=0.05))
    with pytest.raises(TimeoutError):
        await conn.connect(timeout=0.3)
    with pytest.raises(RuntimeError):
        _ = conn.js
    with pytest.raises(RuntimeError):
        _ = conn.nc
    assert not conn.connected


async def test_server_auth_options(tmp_path: Path) -> None:
    with NatsServerProcess(store_dir=tmp_path / "u", user="u", password="p") as srv:
        conn = NatsConnection(ConnectionSettings(urls=(srv.url,), user="u", password="p"))
        await conn.connect(timeout=5)
        assert conn.connected
        await conn.close()
    with NatsServerProcess(store_dir=tmp_path / "t", token="tok") as srv:
        conn = NatsConnection(ConnectionSettings(urls=(srv.url,), token="tok"))
        await conn.connect(timeout=5)
        assert conn.connected
        await conn.close()


def test_embedded_server_errors(tmp_path: Path) -> None:
    assert find_nats_server().endswith("nats-server")
    srv = NatsServerProcess(store_dir=tmp_path / "x")
    with pytest.raises(NatsServerError):
        _ = srv.url
    bad = NatsServerProcess(store_dir=tmp_path / "bad", extra_args=["--no-such-flag"])
    with pytest.raises(NatsServerError):
        bad.start(timeout=5)
    srv.start()
    pid = srv.pid
    srv.restart()
    assert srv.pid != pid
    assert srv.running
    srv.kill()
    srv.stop()
    assert not srv.running


def test_connection_options() -> None:
    s = ConnectionSettings(
        urls=("nats://a:1", "nats://b:2"),
        user="u",
        password="p",
        creds_file="/c.creds",
        tls_hostname="h",
        extra={"no_echo": True},
    )
    opts = s.connect_options()
    assert opts["servers"] == ["nats://a:1", "nats://b:2"]
    assert opts["user"] == "u"
    assert opts["password"] == "p"
    assert opts["user_credentials"] == "/c.creds"
    assert opts["tls_hostname"] == "h"
    assert opts["no_echo"] is True
    assert opts["max_reconnect_attempts"] == -1
    assert ConnectionSettings(token="t").connect_options()["token"] == "t"
    assert s.tls_context() is None
    rng = random.Random(1)
    delays = [backoff_delay(i, base=0.1, cap=2.0, rng=rng) for i in range(10)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert delays[-1] >= 1.0


def test_envelope_and_subjects() -> None:
    t = TaskEnvelope(type="a.b", payload={"x": 1}, tenant="t1", attempt_offset=2, headers={"traceparent": "00-x"})
    h = t.to_headers()
    assert h["Nats-Msg-Id"] == t.id
    assert h["Hulk-Attempt-Offset"] == "2"
    assert h["traceparent"] == "00-x"
    back = TaskEnvelope.decode(t.body(), h)
    assert back.payload == {"x": 1}
    assert back.attempt_offset == 2
    assert back.tenant == "t1"
    for bad in (b"nope", b"[1]", b'{"id": 1, "type": "x"}'):
        with pytest.raises(PoisonMessage):
            TaskEnvelope.decode(bad, None)
    with pytest.raises(PoisonMessage):
        TaskEnvelope.decode(b'{"id": "i", "type": "bad type"}', None)
    with pytest.raises(PoisonMessage):
        TaskEnvelope.decode(b'{"id": "i", "type": "x"}', {"Hulk-Attempt-Offset": "z"})
    assert intake_subject("email.send") == "hulk.intake.email.send"
    assert event_subject("completed") == "hulk.task.completed"
    assert dead_letter_subject("x.y") == "hulk.errors.dead.x.y"
    assert dead_letter_subject(None) == "hulk.errors.poison"
    assert dead_letter_subject("bad type") == "hulk.errors.poison"
    for bad_type in ("", "a..b", "a.*", "a b", "a.>"):
        with pytest.raises(ValueError, match="task_type"):
            intake_subject(bad_type)
    with pytest.raises(ValueError, match="kind"):
        event_subject("Bad.Kind")


async def test_node_stops_cleanly_after_nats_went_away(nats_server: NatsServer, tmp_path: Path) -> None:
    executor = SimpleExecutor({"ok": ok})
    node = MessagingNode(
        NodeSettings(
            instance_id="gone1",
            data_dir=tmp_path / "node",
            connection=ConnectionSettings(
                urls=(nats_server.url,), reconnect_base=0.05, reconnect_max=0.3, ping_interval=0.5
            ),
            slots=2,
            heartbeat_interval=0.2,
            lease_ttl=1.0,
        ),
        executor,
    )
    executor.bind(node)
    await node.start()
    await eventually(lambda: node.ready, 10)
    nats_server.kill()
    await eventually(lambda: not node.ready, 10)
    # Every component stops (none raises), and the outbox file is released for the next start.
    await asyncio.wait_for(node.stop(), 30)
    assert node.conn is not None
    assert not node.conn.connected
    reopened = Outbox(tmp_path / "node" / "outbox")
    reopened.close()
