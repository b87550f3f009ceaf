"""The task engine against a plain asyncio.Queue + N worker coroutines, measured in the same run.

Throughput rows push 20,000 no-op async tasks through submit -> execute -> status recorded on uvloop,
with a producer that respects backpressure (the queue holds 2,000). The hulk row has every feature
on: per-task timeout (watched by the one watchdog), a circuit breaker on the handler, events
delivered to a sink, native metrics, the in-memory status store and UUIDv7 ids. The baseline keeps a
record per task (id, payload, status strings, result) in a dict, as a hand-written runner would.

The latency row runs hulk at half of the peak rate measured just before and reports p50/p99
submit-to-start; the memory row reports bytes per queued task (tracemalloc), beyond the payload.
Figures go to `extra_info` and are printed; bench/results/engine.md has a measured table.

Run: .venv/bin/python -m pytest bench/bench_engine.py --benchmark-only -q -s
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from hulk.engine import BreakerPolicy, EngineConfig, Hulk, TaskEvent, TaskStatus
from hulk.errors import QueueFull

QUEUED = TaskStatus.QUEUED
TASKS = 20_000
QUEUE = 2_000
WORKERS = (os.cpu_count() or 1) * 2  # what workers="auto" gives
ROUNDS = 15

THROUGHPUT = "engine: 20k no-op async tasks, submit -> succeeded"
LATENCY = "engine: submit-to-start at half of peak load"
MEMORY = "engine: memory per queued task"


async def noop(payload: Any) -> Any:
    return None


class CountingSink:
    """An event sink doing the least a real one would: it looks at every batch.

    With `waits` set, it also records each start's submit-to-start seconds (plain floats, which
    the garbage collector ignores, so the measurement keeps no task alive).
    """

    def __init__(self) -> None:
        self.events = 0
        self.waits: list[float] | None = None

    def publish(self, events: Sequence[TaskEvent]) -> None:
        self.events += len(events)
        waits = self.waits
        if waits is not None:
            for task, previous, _status, at in events:
                if previous is QUEUED:
                    waits.append(at - task.queued_at)  # type: ignore[operator]


class Record:
    """The baseline's task record."""

    __slots__ = ("id", "payload", "result", "status")

    def __init__(self, task_id: int, payload: Any) -> None:
        self.id = task_id
        self.payload = payload
        self.status = "queued"
        self.result: Any = None


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = uvloop.new_event_loop()
    yield event_loop
    event_loop.close()


async def baseline_run(timeout: float | None) -> dict[int, Record]:
    """asyncio.Queue + N workers; with `timeout`, each handler runs under asyncio.timeout."""
    queue: asyncio.Queue[Record] = asyncio.Queue(QUEUE)
    records: dict[int, Record] = {}
    done = asyncio.Event()
    finished = 0

    async def worker() -> None:
        nonlocal finished
        while True:
            record = await queue.get()
            record.status = "running"
            if timeout is None:
                record.result = await noop(record.payload)
            else:
                async with asyncio.timeout(timeout):
                    record.result = await noop(record.payload)
            record.status = "succeeded"
            finished += 1
            if finished == TASKS:
                done.set()

    workers = [asyncio.ensure_future(worker()) for _ in range(WORKERS)]
    for n in range(TASKS):
        record = Record(n, None)
        records[n] = record
        await queue.put(record)
    await done.wait()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return records


def make_app(**overrides: Any) -> tuple[Hulk, CountingSink]:
    sink = CountingSink()
    config = EngineConfig(**{"workers": "auto", "queue_size": QUEUE, "timeout": 20.0, **overrides})
    app = Hulk(config, events=sink)
    app.task("noop", breaker=BreakerPolicy())(noop)
    return app, sink


async def hulk_run(app: Hulk, count: int = TASKS) -> None:
    submit = app.submit
    pool = app.pool
    succeeded = app.metrics.for_type("noop").succeeded
    target = succeeded.value + count
    sent = 0
    while sent < count:
        try:
            submit("noop", None)
            sent += 1
        except QueueFull:
            await pool.wait_for_room()
    # Polling on purpose: an event per task would add to what is measured.
    while succeeded.value < target or pool.depth:  # noqa: ASYNC110
        await asyncio.sleep(0)
    pool.flush()  # statuses recorded in the store, events handed to the sink


async def hulk_run_batched(app: Hulk, batch: int = 100) -> None:
    """Like `hulk_run`, with `submit_many` taking `batch` payloads per call."""
    submit_many = app.submit_many
    pool = app.pool
    succeeded = app.metrics.for_type("noop").succeeded
    target = succeeded.value + TASKS
    payloads = [None] * batch
    sent = 0
    while sent < TASKS:
        try:
            sent += len(submit_many("noop", payloads[: TASKS - sent]))
        except QueueFull:
            await pool.wait_for_room()
    # Polling on purpose: an event per task would add to what is measured.
    while succeeded.value < target or pool.depth:  # noqa: ASYNC110
        await asyncio.sleep(0)
    pool.flush()


def rate(benchmark: BenchmarkFixture) -> float:
    assert benchmark.stats is not None
    return TASKS / float(benchmark.stats.stats.median)


@pytest.mark.benchmark(group=THROUGHPUT)
def test_throughput_baseline_asyncio_queue(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: loop.run_until_complete(baseline_run(None)), rounds=ROUNDS, warmup_rounds=2
    )
    benchmark.extra_info["tasks_per_s"] = round(rate(benchmark))
    print(f"\nbaseline: {rate(benchmark):,.0f} tasks/s")


@pytest.mark.benchmark(group=THROUGHPUT)
def test_throughput_baseline_with_asyncio_timeout(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: loop.run_until_complete(baseline_run(20.0)), rounds=ROUNDS, warmup_rounds=2
    )
    benchmark.extra_info["tasks_per_s"] = round(rate(benchmark))
    print(f"\nbaseline + asyncio.timeout per task: {rate(benchmark):,.0f} tasks/s")


@pytest.mark.benchmark(group=THROUGHPUT)
def test_throughput_hulk_all_features(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    app, sink = make_app()
    loop.run_until_complete(app.start())
    try:
        benchmark.pedantic(  # type: ignore[no-untyped-call]
            lambda: loop.run_until_complete(hulk_run(app)), rounds=ROUNDS, warmup_rounds=2
        )
    finally:
        loop.run_until_complete(app.stop())
    snap = app.metrics_snapshot()
    assert snap["types"]["noop"]["succeeded"] == TASKS * (ROUNDS + 2)
    assert sink.events == 3 * TASKS * (ROUNDS + 2)
    benchmark.extra_info["tasks_per_s"] = round(rate(benchmark))
    print(f"\nhulk (timeout, breaker, events, metrics, store): {rate(benchmark):,.0f} tasks/s")


@pytest.mark.benchmark(group=THROUGHPUT)
def test_throughput_hulk_submit_many(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    app, _sink = make_app()
    loop.run_until_complete(app.start())
    try:
        benchmark.pedantic(  # type: ignore[no-untyped-call]
            lambda: loop.run_until_complete(hulk_run_batched(app)), rounds=ROUNDS, warmup_rounds=2
        )
    finally:
        loop.run_until_complete(app.stop())
    assert app.metrics_snapshot()["types"]["noop"]["succeeded"] == TASKS * (ROUNDS + 2)
    benchmark.extra_info["tasks_per_s"] = round(rate(benchmark))
    print(f"\nhulk, every feature, submit_many x100: {rate(benchmark):,.0f} tasks/s")


PAIRED = "engine: baseline and hulk rounds interleaved (ratio per pair)"


@pytest.mark.benchmark(group=PAIRED)
def test_throughput_paired_rounds(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    """Alternates a baseline round and hulk rounds (submit, submit_many), so all see the same load.

    On a shared machine the load changes between the rows of the table above; the median of the
    per-pair ratios is the figure that compares like with like.
    """
    app, _sink = make_app()
    loop.run_until_complete(app.start())
    base: list[float] = []
    hulk: list[float] = []
    batched: list[float] = []

    def pair() -> None:
        began = time.perf_counter()
        loop.run_until_complete(baseline_run(None))
        middle = time.perf_counter()
        loop.run_until_complete(hulk_run(app))
        end = time.perf_counter()
        loop.run_until_complete(hulk_run_batched(app))
        base.append(middle - began)
        hulk.append(end - middle)
        batched.append(time.perf_counter() - end)

    try:
        benchmark.pedantic(  # type: ignore[no-untyped-call]
            pair, rounds=ROUNDS, warmup_rounds=2
        )
    finally:
        loop.run_until_complete(app.stop())

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    ratio = median([b / h for b, h in zip(base[2:], hulk[2:], strict=True)])
    ratio_many = median([b / h for b, h in zip(base[2:], batched[2:], strict=True)])
    base_rate, hulk_rate, many_rate = (TASKS / median(v[2:]) for v in (base, hulk, batched))
    best_hulk = TASKS / min(hulk[2:])
    benchmark.extra_info.update(
        median_ratio=ratio,
        median_ratio_submit_many=ratio_many,
        baseline_per_s=round(base_rate),
        hulk_per_s=round(hulk_rate),
        hulk_submit_many_per_s=round(many_rate),
        hulk_best_per_s=round(best_hulk),
    )
    print(
        f"\npaired: baseline {base_rate:,.0f}/s, hulk {hulk_rate:,.0f}/s (best round {best_hulk:,.0f}/s), "
        f"hulk submit_many {many_rate:,.0f}/s; median ratio hulk/baseline {ratio:.2f}x, "
        f"with submit_many {ratio_many:.2f}x"
    )


async def paced_run(app: Hulk, sink: CountingSink, per_second: float, seconds: float) -> tuple[list[float], int]:
    """Submits at `per_second` for `seconds`, in the bursts a 1 ms intake tick would bring.

    Returns:
        Each task's submit-to-start seconds (sorted), and how many submits met a full queue.
    """
    loop = asyncio.get_running_loop()
    waits: list[float] = []
    sink.waits = waits
    full = 0
    start = loop.time()
    sent = 0
    while True:
        elapsed = loop.time() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * per_second)
        while sent < due:
            try:
                app.submit("noop", None)
                sent += 1
            except QueueFull:
                full += 1
                await app.pool.wait_for_room()
        await asyncio.sleep(0.001)
    pool = app.pool
    while pool.depth or pool.busy:  # noqa: ASYNC110 - polling on purpose, as in hulk_run
        await asyncio.sleep(0)
    pool.flush()
    sink.waits = None
    return sorted(waits), full


@pytest.mark.benchmark(group=LATENCY)
def test_latency_hulk_half_load(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    app, sink = make_app()
    loop.run_until_complete(app.start())
    try:
        rounds = []
        for _ in range(5):
            began = time.perf_counter()
            loop.run_until_complete(hulk_run(app))
            rounds.append(TASKS / (time.perf_counter() - began))
        peak = sorted(rounds)[len(rounds) // 2]
        result: dict[str, tuple[list[float], int]] = {}

        def run() -> None:
            result["lat"] = loop.run_until_complete(paced_run(app, sink, peak / 2, 2.0))

        benchmark.pedantic(  # type: ignore[no-untyped-call]
            run, rounds=1, iterations=1
        )
    finally:
        loop.run_until_complete(app.stop())
    lat, full = result["lat"]
    p50 = lat[len(lat) // 2] * 1e3
    p99 = lat[int(len(lat) * 0.99)] * 1e3
    benchmark.extra_info.update(
        peak_per_s=round(peak), rate_per_s=round(peak / 2), tasks=len(lat), p50_ms=p50, p99_ms=p99, queue_full=full
    )
    print(
        f"\nhalf load ({peak / 2:,.0f}/s of a median peak of {peak:,.0f}/s, {len(lat)} tasks, "
        f"{full} full-queue waits): p50 {p50:.3f} ms, p99 {p99:.3f} ms"
    )


@pytest.mark.benchmark(group=MEMORY)
def test_memory_per_queued_task(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop) -> None:
    app, _sink = make_app(workers=1, queue_size=QUEUE)
    gate = asyncio.Event()

    @app.task("hold")
    async def hold(payload: Any) -> None:
        await gate.wait()

    count = QUEUE
    result: dict[str, float] = {}

    async def measure() -> None:
        await app.start()
        app.submit("hold")
        for _ in range(100):
            await asyncio.sleep(0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            app.submit("noop", None)
        app.pool.flush()  # indexed in the store, events handed over
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        result["per_task"] = (after - before) / count
        gate.set()
        await app.stop()

    benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: loop.run_until_complete(measure()), rounds=1, iterations=1
    )
    benchmark.extra_info["bytes_per_queued_task"] = round(result["per_task"])
    print(f"\nmemory per queued task (payload None): {result['per_task']:.0f} bytes")
