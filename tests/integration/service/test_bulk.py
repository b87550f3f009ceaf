"""The bulk path through `hulk serve`: one intake message carrying many tasks, each run and recorded once."""

from __future__ import annotations

import asyncio

import pytest

from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.publisher import TaskProducer
from hulk.messaging.streams import STREAM_SCHEDULER, STREAM_TASKS
from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import client_for
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration

TASKS = 150


async def _submit_batch(url: str) -> None:
    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    try:
        tasks = [TaskEnvelope(type="echo", payload=i, id=f"bulk-{i}") for i in range(TASKS)]
        result = await TaskProducer(conn).submit_batch(tasks)
        assert not result.duplicate
    finally:
        await conn.close()


async def _stream_seqs(url: str) -> dict[str, int]:
    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    try:
        return {name: (await conn.js.stream_info(name)).state.last_seq for name in (STREAM_TASKS, STREAM_SCHEDULER)}
    finally:
        await conn.close()


def test_a_batch_larger_than_the_queue_runs_every_task_once(
    nats_server: NatsServer, start_service: ServiceFactory
) -> None:
    # A queue of 8: the batch's 150 tasks wait for room instead of being re-published one by one.
    service = start_service(nats_server, HULK_ENGINE__QUEUE_SIZE="8", HULK_ENGINE__WORKERS="2")
    asyncio.run(_submit_batch(nats_server.url))
    with client_for(service) as client:
        views = [client.get(f"/v1/tasks/bulk-{i}", params={"wait": "20s"}).json() for i in range(TASKS)]
    assert [(v["status"], v["result"], v["attempt"]) for v in views] == [("succeeded", i, 1) for i in range(TASKS)]
    # One message in the intake stream (the batch) and none re-published through the scheduler.
    assert asyncio.run(_stream_seqs(nats_server.url)) == {STREAM_TASKS: 1, STREAM_SCHEDULER: 0}
