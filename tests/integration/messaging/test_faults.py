from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.node import MessagingNode, NodeSettings, SimpleExecutor
from hulk.messaging.publisher import TaskProducer
from tests.integration.messaging.helpers import WorkerProcess, completed_events, eventually
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.slow


async def test_kill_9_mid_task_is_redelivered_and_completes_elsewhere(
    nats_server: NatsServer, conn: NatsConnection, tmp_path: Path
) -> None:
    a = await WorkerProcess.spawn([nats_server.url], "wa", tmp_path / "wa", ack_wait=1.0)
    b = await WorkerProcess.spawn([nats_server.url], "wb", tmp_path / "wb", ack_wait=1.0)
    try:
        ids = {f"k{i}" for i in range(24)}
        await TaskProducer(conn).submit_many([TaskEnvelope(type="sleep", id=i, payload=0.4) for i in sorted(ids)])
        await asyncio.wait_for(a.first_start.wait(), 20)
        a.kill()
        killed_mid_task = {tid for tid, _ in a.started}
        events = await completed_events(conn, ids, 40)
        assert ids <= events.keys()
        # A task the killed worker held finished elsewhere, on a later delivery.
        redelivered = {tid for tid in killed_mid_task if any(int(str(e["attempt"])) >= 2 for e in events[tid])}
        assert redelivered
    finally:
        a.kill()
        await a.stop()
        await b.stop()


async def noop(payload: object) -> object:
    return payload


@pytest.mark.timeout(300)  # bounded waits add up to ~150 s on a loaded 2-core machine
async def test_nats_down_5s_under_load_loses_nothing(
    nats_server: NatsServer, conn: NatsConnection, tmp_path: Path
) -> None:
    executor = SimpleExecutor({"noop": noop})
    node = MessagingNode(
        NodeSettings(
            instance_id="n1",
            data_dir=tmp_path / "node",
            connection=ConnectionSettings(
                urls=(nats_server.url,), reconnect_base=0.05, reconnect_max=0.3, ping_interval=1.0
            ),
            slots=16,
            ack_wait=2.0,
            scheduler=False,
        ),
        executor,
    )
    executor.bind(node)
    await node.start()
    producer = TaskProducer(conn, timeout=1.0)
    accepted: set[str] = set()
    stop = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop.is_set():
            batch = [TaskEnvelope(type="noop", id=f"o{i + j}", payload=i + j) for j in range(20)]
            i += 20
            results = await asyncio.gather(*(producer.submit(t) for t in batch), return_exceptions=True)
            accepted.update(t.id for t, r in zip(batch, results, strict=True) if not isinstance(r, BaseException))
            if any(isinstance(r, BaseException) for r in results):
                await asyncio.sleep(0.05)

    prod = asyncio.create_task(produce())
    try:
        await eventually(lambda: executor.completed >= 200, 20)
        await nats_server.stop_async()
        await eventually(lambda: not node.ready, 10)
        await asyncio.sleep(5.0)  # the outage itself
        await nats_server.start_async()
        await conn.wait_connected(20)
        await eventually(lambda: executor.completed >= len(accepted) // 2 + 400, 30)
        stop.set()
        await prod
        events = await completed_events(conn, accepted, 45)
        assert accepted <= events.keys()
        assert node.ready
        assert node.events is not None
        await node.events.flush(20)
        assert node.events.backlog == 0
    finally:
        stop.set()
        with contextlib.suppress(BaseException):
            await prod
        await node.stop()
