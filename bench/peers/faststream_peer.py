"""FastStream on NATS JetStream: a pull subscriber taking batches, per-message logs lowered to DEBUG.

Configured as FastStream's documentation recommends for throughput:
- `NatsBroker(log_level=logging.DEBUG)`: FastStream logs every message it consumes at the broker's
  log level; at the default INFO that logging alone halves throughput, at DEBUG it is filtered out;
- a pull subscriber, `PullSub(batch_size=256)`: one pull request fetches up to 256 messages, which
  FastStream then runs concurrently before it pulls again;
- a durable consumer on a work-queue stream (file storage), acked after the handler returns
  (FastStream's default ack policy).

The producer calls `broker.publish(..., stream=...)`, which awaits the stream's acknowledgement,
256 in flight.

Run: .venv/bin/python -m bench.peers.faststream_peer --tasks 20000
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import RetentionPolicy, StorageType

from bench.peers.harness import PeerSpec, TaskCounter, env_url, in_windows, main, mark_ready, python_worker

SUBJECT, DURABLE = "bench.tasks", "workers"
BATCH = 256
STREAM = JStream("BENCH", subjects=[SUBJECT], retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE)


def build_app() -> FastStream:
    broker = NatsBroker(env_url(), log_level=logging.DEBUG)
    counter = TaskCounter()

    @broker.subscriber(SUBJECT, stream=STREAM, durable=DURABLE, pull_sub=PullSub(batch_size=BATCH, timeout=1.0))
    async def noop(body: dict[str, int]) -> None:
        counter.tick()

    app = FastStream(broker)
    app.after_startup(mark_ready)
    return app


async def work() -> None:
    await build_app().run()


async def produce(url: str, n: int, window: int, mark_start: Callable[[], None]) -> None:
    broker = NatsBroker(url, log_level=logging.DEBUG)
    async with broker:
        await broker.start()

        async def submit(i: int) -> object:
            return await broker.publish({"n": i}, SUBJECT, stream=STREAM.name)

        mark_start()
        await in_windows(n, window, submit)


SPEC = PeerSpec(
    name="faststream",
    module="bench.peers.faststream_peer",
    server="nats",
    packages=("faststream", "nats-py"),
    config={
        "broker": "NatsBroker(log_level=logging.DEBUG): per-message logs filtered out",
        "subscriber": f"JStream work-queue (file), durable pull, PullSub(batch_size={BATCH}, timeout=1.0), "
        "handler `async def noop(body: dict[str, int])`",
        "ack": "after the handler returns (FastStream's default ack policy)",
        "worker": "one process, uvloop, FastStream(broker).run()",
        "producer": "broker.publish(..., stream=...) (awaits the stream ack), 256 in flight",
    },
    worker_argv=lambda: python_worker("bench.peers.faststream_peer"),
    produce=produce,
    work=work,
    durable="stored in a file-backed stream before publish returns; acked after execution",
)

if __name__ == "__main__":
    main(SPEC)
