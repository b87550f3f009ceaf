"""BoundedQueue against queue.Queue, asyncio.Queue and collections.deque, measured in the same run.

Each benchmark runs a fixed number of operations per round with the bound methods in locals, so the
Python loop costs the same in every row of a group and the ratios compare the queues themselves.

Run: .venv/bin/python -m pytest bench/bench_queue.py --benchmark-only -q
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from itertools import repeat

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hulk._native import BoundedQueue

PAIRS = 1_000
BATCH = 256
THREADED_ITEMS = 20_000
ITEM = object()

PAIR = "queue pair: push+pop x1000"
BATCHED = "queue batch: 256 in + 256 out"
THREADED = "queue threads: 1 producer, 1 consumer, 20k blocking"


@pytest.mark.benchmark(group=PAIR)
def test_pair_hulk_try_push_try_pop(benchmark: BenchmarkFixture) -> None:
    q = BoundedQueue(1024)
    push, pop = q.try_push, q.try_pop

    def run() -> None:
        for item in repeat(ITEM, PAIRS):
            push(item)
            pop()

    benchmark(run)


@pytest.mark.benchmark(group=PAIR)
def test_pair_queue_queue_put_get(benchmark: BenchmarkFixture) -> None:
    q: queue.Queue[object] = queue.Queue(1024)
    put, get = q.put, q.get

    def run() -> None:
        for item in repeat(ITEM, PAIRS):
            put(item)
            get()

    benchmark(run)


@pytest.mark.benchmark(group=PAIR)
def test_pair_asyncio_queue_put_nowait_get_nowait(benchmark: BenchmarkFixture) -> None:
    q: asyncio.Queue[object] = asyncio.Queue(1024)
    put, get = q.put_nowait, q.get_nowait

    def run() -> None:
        for item in repeat(ITEM, PAIRS):
            put(item)
            get()

    benchmark(run)


@pytest.mark.benchmark(group=PAIR)
def test_pair_deque_append_popleft(benchmark: BenchmarkFixture) -> None:
    q: deque[object] = deque()
    put, get = q.append, q.popleft

    def run() -> None:
        for item in repeat(ITEM, PAIRS):
            put(item)
            get()

    benchmark(run)


ITEMS = [object() for _ in range(BATCH)]


@pytest.mark.benchmark(group=BATCHED)
def test_batch_hulk_push_many_pop_many(benchmark: BenchmarkFixture) -> None:
    q = BoundedQueue(BATCH)

    def run() -> None:
        q.push_many(ITEMS)
        q.pop_many(BATCH)

    benchmark(run)
    assert len(q) == 0


@pytest.mark.benchmark(group=BATCHED)
def test_batch_deque_append_popleft(benchmark: BenchmarkFixture) -> None:
    q: deque[object] = deque()
    put, get = q.append, q.popleft

    def run() -> None:
        for item in ITEMS:
            put(item)
        for _ in repeat(None, BATCH):
            get()

    benchmark(run)


@pytest.mark.benchmark(group=BATCHED)
def test_batch_deque_extend_popleft(benchmark: BenchmarkFixture) -> None:
    q: deque[object] = deque()
    get = q.popleft

    def run() -> None:
        q.extend(ITEMS)
        [get() for _ in repeat(None, BATCH)]

    benchmark(run)


def _threaded(put: Callable[[object], object], get: Callable[[], object]) -> None:
    def produce() -> None:
        for item in repeat(ITEM, THREADED_ITEMS):
            put(item)

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in repeat(None, THREADED_ITEMS):
        get()
    producer.join()


@pytest.mark.benchmark(group=THREADED)
def test_threads_hulk_push_pop(benchmark: BenchmarkFixture) -> None:
    q = BoundedQueue(256)
    benchmark(_threaded, q.push, q.pop)


@pytest.mark.benchmark(group=THREADED)
def test_threads_queue_queue_put_get(benchmark: BenchmarkFixture) -> None:
    q: queue.Queue[object] = queue.Queue(256)
    benchmark(_threaded, q.put, q.get)
