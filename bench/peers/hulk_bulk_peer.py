"""hulk's bulk path: the same `hulk serve` worker, 100 tasks per intake message.

The producer sends `TaskProducer.submit_batch` messages of `BULK` tasks each (one `Nats-Msg-Id`
per batch, every stream ack awaited, `window` batches in flight). The worker is unchanged: each
task of a batch is still run by the engine, recorded (status and events) and settled on its own;
the message is acked once its last task is terminal. Durability is the per-message path's: the
batch is stored in the file-backed intake stream before the producer's publish returns.

Compared with raw nats-py's per-message figure in the same run (the issue's target: 2x).

Run: .venv/bin/python -m bench.peers.hulk_bulk_peer --tasks 20000
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from bench.peers.harness import main
from bench.peers.hulk_peer import SPEC as PER_MESSAGE
from bench.peers.hulk_peer import TASK_TYPE
from hulk.messaging.connection import ConnectionSettings, NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.publisher import TaskProducer

BULK = 100


async def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    producer = TaskProducer(conn)
    tasks = [TaskEnvelope(type=TASK_TYPE, payload={"n": i}) for i in range(n)]
    batches = [tasks[i : i + BULK] for i in range(0, n, BULK)]
    in_flight = asyncio.Semaphore(max(1, window // BULK) * 4)

    async def send(batch: list[TaskEnvelope]) -> None:
        async with in_flight:
            await producer.submit_batch(batch)

    mark_start()
    await asyncio.gather(*(send(b) for b in batches))
    await conn.close()


SPEC = dataclasses.replace(
    PER_MESSAGE,
    name="hulk-bulk",
    module="bench.peers.hulk_bulk_peer",
    config={
        **PER_MESSAGE.config,
        "producer": f"TaskProducer.submit_batch: {BULK} tasks per message (one Nats-Msg-Id per batch, "
        "every stream ack awaited)",
        "ack": "each task recorded and reported on its own; the message acked once all its tasks are terminal",
    },
    produce=produce,
)

if __name__ == "__main__":
    main(SPEC)
