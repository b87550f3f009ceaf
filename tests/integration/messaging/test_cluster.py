from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.node import MessagingNode, NodeSettings, SimpleExecutor
from hulk.messaging.publisher import TaskProducer
from hulk.messaging.streams import STREAM_TASKS, StreamSettings, ensure_streams
from tests.integration.messaging.helpers import completed_events
from tests.nats_servers import NatsCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster")
    c.start()
    try:
        yield c
    finally:
        for s in c.servers:
            s.kill()


async def noop(payload: object) -> object:
    return payload


def settings(urls: list[str]) -> ConnectionSettings:
    return ConnectionSettings(urls=tuple(urls), reconnect_base=0.05, reconnect_max=0.3, ping_interval=1.0)


@pytest.mark.timeout(300)  # a loaded 2-core machine slows the cluster's failover
async def test_r3_cluster_node_killed_under_load_loses_nothing(cluster: NatsCluster, tmp_path: Path) -> None:
    conn = NatsConnection(settings(cluster.urls))
    await conn.connect(timeout=20)
    streams = StreamSettings(replicas=3)
    for _ in range(100):  # the JetStream meta leader is elected a little after the servers are up
        try:
            await ensure_streams(conn.js, streams)
            break
        except Exception:
            await asyncio.sleep(0.2)
    si = await conn.js.stream_info(STREAM_TASKS)
    assert si.config.num_replicas == 3
    executor = SimpleExecutor({"noop": noop}, record_status=False)
    node = MessagingNode(
        NodeSettings(
            instance_id="c1",
            data_dir=tmp_path / "node",
            connection=settings(cluster.urls),
            streams=streams,
            slots=32,
            ack_wait=3.0,
            scheduler=False,
        ),
        executor,
    )
    executor.bind(node)
    await node.start()
    producer = TaskProducer(conn, timeout=2.0)
    accepted: set[str] = set()
    try:
        loop = asyncio.get_running_loop()
        for i in range(0, 3000, 100):
            pending = [TaskEnvelope(type="noop", id=f"c{i + j}") for j in range(100)]
            deadline = loop.time() + 30
            # Producers retry what failed during the failover: the same Nats-Msg-Id makes it safe.
            while pending and loop.time() < deadline:
                results = await asyncio.gather(*(producer.submit(t) for t in pending), return_exceptions=True)
                accepted.update(t.id for t, r in zip(pending, results, strict=True) if not isinstance(r, BaseException))
                pending = [t for t, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
                if pending:
                    await asyncio.sleep(0.2)
            if i == 1000:
                cluster.servers[0].kill()
        assert len(accepted) == 3000
        events = await completed_events(conn, accepted, 90)
        assert accepted <= events.keys()
    finally:
        await node.stop()
        await conn.close()
