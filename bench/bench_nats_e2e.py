"""End-to-end durable task throughput on NATS JetStream: hulk vs raw nats-py, same server, same run.

Each round runs a producer process and a consumer process against one private nats-server (file
storage). Both processes set up first, then start together on a signal; a round's time runs from
that signal until the consumer has finished its last task.

- raw nats-py: `publish_async` N messages; the consumer `fetch(256)`es and acks each.
- hulk: `TaskProducer.submit_many` N tasks (Nats-Msg-Id, traceparent); the consumer is hulk's
  intake (slot-bounded pull) -> execute a no-op -> completed event on `hulk.task.completed`
  (through the durable event publisher, one batched event message per event-loop turn) -> ack.
- hulk bulk: the same consumer; the producer sends 100 tasks per message (`submit_batch`), each
  task still executed, reported and settled on its own, the message acked once.

Run: `.venv/bin/python -m pytest bench/bench_nats_e2e.py --benchmark-only -q`
(`BENCH_NATS_TASKS` sets N, default 50,000). A process role runs as
`python bench/bench_nats_e2e.py ROLE URL N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
N = int(os.environ.get("BENCH_NATS_TASKS", "50000"))
SLOTS = 256
BULK = 100
RAW_STREAM = "BENCH_RAW"


# --- process roles -------------------------------------------------------------------------------


async def _go() -> None:
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def raw_producer(url: str, n: int) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    payload = b'{"id": "x", "type": "noop", "payload": null}'
    await _go()
    for i in range(n):
        await js.publish_async("bench.raw", payload, headers={"Nats-Msg-Id": f"r{i}"})
    await js.publish_async_completed()
    print(f"DONE {time.time()}", flush=True)
    await nc.close()


async def raw_consumer(url: str, n: int) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("bench.raw", durable="raw", stream=RAW_STREAM)
    await _go()
    done = 0
    while done < n:
        try:
            msgs = await sub.fetch(SLOTS, timeout=1)
        except NatsTimeout:
            continue
        for m in msgs:
            await m.ack()
        done += len(msgs)
    await nc.flush()
    print(f"DONE {time.time()}", flush=True)
    await nc.close()


async def hulk_producer(url: str, n: int) -> None:
    from hulk.messaging.connection import ConnectionSettings, NatsConnection
    from hulk.messaging.envelope import TaskEnvelope
    from hulk.messaging.publisher import TaskProducer

    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    producer = TaskProducer(conn)
    await _go()
    window = 4000
    for start in range(0, n, window):
        await producer.submit_many(
            [TaskEnvelope(type="noop", id=f"h{i}") for i in range(start, min(n, start + window))], window=window
        )
    print(f"DONE {time.time()}", flush=True)
    await conn.close()


async def hulk_bulk_producer(url: str, n: int) -> None:
    from hulk.messaging.connection import ConnectionSettings, NatsConnection
    from hulk.messaging.envelope import TaskEnvelope
    from hulk.messaging.publisher import TaskProducer

    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    producer = TaskProducer(conn)
    await _go()
    futs = []
    for start in range(0, n, BULK):
        batch = [TaskEnvelope(type="noop", id=f"h{i}") for i in range(start, min(n, start + BULK))]
        futs.append(asyncio.ensure_future(producer.submit_batch(batch)))
        if len(futs) >= 64:
            await asyncio.gather(*futs)
            futs = []
    await asyncio.gather(*futs)
    print(f"DONE {time.time()}", flush=True)
    await conn.close()


async def hulk_consumer(url: str, n: int) -> None:
    from hulk.messaging.connection import ConnectionSettings
    from hulk.messaging.node import MessagingNode, NodeSettings, SimpleExecutor

    async def noop(payload: Any) -> None:
        return None

    executor = SimpleExecutor({"noop": noop}, record_status=False)
    with tempfile.TemporaryDirectory() as tmp:
        node = MessagingNode(
            NodeSettings(
                instance_id="bench",
                data_dir=Path(tmp),
                connection=ConnectionSettings(urls=(url,)),
                slots=SLOTS,
                cluster_slots=SLOTS,
                scheduler=False,
                heartbeat_interval=5.0,
            ),
            executor,
        )
        executor.bind(node)
        await node.start()
        await _go()
        while True:  # polled: a callback per task would cost the measured path
            if executor.completed >= n:
                break
            await asyncio.sleep(0.005)
        assert node.events is not None
        await node.events.flush(60)
        print(f"DONE {time.time()}", flush=True)
        await node.stop()


ROLES = {
    "raw_producer": raw_producer,
    "raw_consumer": raw_consumer,
    "hulk_producer": hulk_producer,
    "hulk_consumer": hulk_consumer,
    "hulk_bulk_producer": hulk_bulk_producer,
    "hulk_bulk_consumer": hulk_consumer,
}


# --- the benchmark -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    from hulk.messaging.embedded import NatsServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServerProcess(store_dir=tmp)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def _reset(url: str) -> None:
    from nats.js.api import RetentionPolicy, StreamConfig
    from nats.js.errors import NotFoundError

    from hulk.messaging.connection import ConnectionSettings, NatsConnection
    from hulk.messaging.streams import STREAM_EVENTS, STREAM_TASKS, StreamSettings, ensure_streams

    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    js = conn.js
    for name in (RAW_STREAM, STREAM_TASKS, STREAM_EVENTS):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await js.add_stream(StreamConfig(name=RAW_STREAM, subjects=["bench.raw"], retention=RetentionPolicy.WORK_QUEUE))
    await ensure_streams(js, StreamSettings())
    await conn.close()


def run_round(url: str, kind: str, n: int = N) -> float:
    """Runs one producer + consumer round; returns seconds from start signal to the last task."""
    asyncio.run(_reset(url))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, f"{kind}_{role}", url, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for role in ("consumer", "producer")
    ]
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        assert line == "READY", line
    start = time.time()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ends = []
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        assert line.startswith("DONE"), line
        ends.append(float(line.split()[1]))
    for p in procs:
        assert p.stdin is not None
        assert p.stdout is not None
        p.stdin.close()
        p.wait(120)
        p.stdout.close()
    return ends[0] - start


@pytest.mark.benchmark(group="nats-e2e")
def test_raw_nats_py(benchmark: Any, server_url: str) -> None:
    secs = benchmark.pedantic(run_round, args=(server_url, "raw"), rounds=3, iterations=1)
    benchmark.extra_info["tasks"] = N
    benchmark.extra_info["tasks_per_s"] = round(N / secs)


@pytest.mark.benchmark(group="nats-e2e")
def test_hulk_bulk_100_per_message(benchmark: Any, server_url: str) -> None:
    secs = benchmark.pedantic(run_round, args=(server_url, "hulk_bulk"), rounds=3, iterations=1)
    benchmark.extra_info["tasks"] = N
    benchmark.extra_info["tasks_per_s"] = round(N / secs)


@pytest.mark.benchmark(group="nats-e2e")
def test_hulk_end_to_end(benchmark: Any, server_url: str) -> None:
    secs = benchmark.pedantic(run_round, args=(server_url, "hulk"), rounds=3, iterations=1)
    benchmark.extra_info["tasks"] = N
    benchmark.extra_info["tasks_per_s"] = round(N / secs)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(ROLES[sys.argv[1]](sys.argv[2], int(sys.argv[3])))
