"""BackoffScheduler against heapq, measured in the same run.

Run: .venv/bin/python -m pytest bench/bench_backoff.py --benchmark-only -q

Groups:
- backoff-1m: schedule 1,000,000 items at random due times, then pop them all in due order. The
  baseline is what a Python scheduler does: heappush of (due, seq, item), then heappop in a loop.
  hulk does more (a key index that allows replace and cancel) from the same precomputed inputs.
- backoff-schedule-cancel: on a scheduler already holding 100,000 items, 10,000 pairs of schedule
  then cancel of a key. The baseline is the heapq recipe from the Python docs (an entry dict and a
  "removed" marker).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hulk._native import BackoffScheduler

N = 1_000_000
END = 2000.0
_rng = random.Random(0)
DUES = [_rng.uniform(0.0, 1000.0) for _ in range(N)]
KEYS = [f"task-{i:07d}" for i in range(N)]
ITEMS = list(range(N))
ATTEMPTS = [i % 10 + 1 for i in range(N)]

PREFILL = 100_000
PAIRS = 10_000
PAIR_KEYS = [f"churn-{i:05d}" for i in range(PAIRS)]
PAIR_DUES = [_rng.uniform(0.0, 1000.0) for _ in range(PAIRS)]


def _scheduler() -> BackoffScheduler:
    return BackoffScheduler(base=0.05, max_delay=600.0, jitter="full", seed=1)


def _pedantic(benchmark: BenchmarkFixture, run: Callable[[Any], int], setup: Callable[[], Any], rounds: int) -> int:
    # pytest-benchmark's `pedantic` carries no annotations.
    result: int = benchmark.pedantic(  # type: ignore[no-untyped-call]
        run, setup=lambda: ((setup(),), {}), rounds=rounds, iterations=1
    )
    return result


# --- 1,000,000 schedules, then drain ---------------------------------------------------------------


def _heapq_1m(heap: list[tuple[float, int, int]]) -> int:
    push, pop = heapq.heappush, heapq.heappop
    for seq, (due, item) in enumerate(zip(DUES, ITEMS, strict=True)):
        push(heap, (due, seq, item))
    popped = 0
    while heap:
        pop(heap)
        popped += 1
    return popped


def _hulk_1m_schedule_at(s: BackoffScheduler) -> int:
    schedule_at, pop_due = s.schedule_at, s.pop_due
    for key, item, due in zip(KEYS, ITEMS, DUES, strict=True):
        schedule_at(key, item, due)
    popped = 0
    while batch := pop_due(END):
        popped += len(batch)
    return popped


def _hulk_1m_schedule_at_pop_one(s: BackoffScheduler) -> int:
    schedule_at, pop_due = s.schedule_at, s.pop_due
    for key, item, due in zip(KEYS, ITEMS, DUES, strict=True):
        schedule_at(key, item, due)
    popped = 0
    while pop_due(END, 1):
        popped += 1
    return popped


def _hulk_1m_schedule_with_jitter(s: BackoffScheduler) -> int:
    schedule, pop_due = s.schedule, s.pop_due
    for key, item, attempt in zip(KEYS, ITEMS, ATTEMPTS, strict=True):
        schedule(key, item, attempt, 0.0)
    popped = 0
    while batch := pop_due(END):
        popped += len(batch)
    return popped


@pytest.mark.benchmark(group="backoff-1m")
@pytest.mark.timeout(900)  # 3 rounds of 1M; the heapq baseline alone can take minutes on a loaded box
def test_1m_heapq(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _heapq_1m, list, rounds=3) == N


@pytest.mark.benchmark(group="backoff-1m")
@pytest.mark.timeout(900)  # 3 rounds of 1M; the heapq baseline alone can take minutes on a loaded box
def test_1m_hulk_schedule_at(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _hulk_1m_schedule_at, _scheduler, rounds=3) == N


@pytest.mark.benchmark(group="backoff-1m")
@pytest.mark.timeout(900)  # 3 rounds of 1M; the heapq baseline alone can take minutes on a loaded box
def test_1m_hulk_schedule_at_pop_one_by_one(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _hulk_1m_schedule_at_pop_one, _scheduler, rounds=3) == N


@pytest.mark.benchmark(group="backoff-1m")
@pytest.mark.timeout(900)  # 3 rounds of 1M; the heapq baseline alone can take minutes on a loaded box
def test_1m_hulk_schedule_with_jitter(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _hulk_1m_schedule_with_jitter, _scheduler, rounds=3) == N


# --- schedule then cancel ----------------------------------------------------------------------------

_REMOVED = object()


class HeapqScheduler:
    """The priority-queue recipe of the heapq docs: lazy deletion through a removed marker."""

    def __init__(self) -> None:
        self.heap: list[list[Any]] = []
        self.entries: dict[str, list[Any]] = {}
        self.counter = itertools.count()

    def schedule_at(self, key: str, item: object, due: float) -> None:
        if key in self.entries:
            self.cancel(key)
        entry = [due, next(self.counter), key, item]
        self.entries[key] = entry
        heapq.heappush(self.heap, entry)

    def cancel(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        entry[-1] = _REMOVED
        return True


def _heapq_prefilled() -> HeapqScheduler:
    h = HeapqScheduler()
    for key, item, due in zip(KEYS[:PREFILL], ITEMS, DUES, strict=False):
        h.schedule_at(key, item, due)
    return h


def _hulk_prefilled() -> BackoffScheduler:
    s = _scheduler()
    for key, item, due in zip(KEYS[:PREFILL], ITEMS, DUES, strict=False):
        s.schedule_at(key, item, due)
    return s


def _heapq_churn(h: HeapqScheduler) -> int:
    schedule_at, cancel = h.schedule_at, h.cancel
    done = 0
    for key, due in zip(PAIR_KEYS, PAIR_DUES, strict=True):
        schedule_at(key, None, due)
        done += cancel(key)
    return done


def _hulk_churn(s: BackoffScheduler) -> int:
    schedule_at, cancel = s.schedule_at, s.cancel
    done = 0
    for key, due in zip(PAIR_KEYS, PAIR_DUES, strict=True):
        schedule_at(key, None, due)
        done += cancel(key)
    return done


def _hulk_churn_with_jitter(s: BackoffScheduler) -> int:
    schedule, cancel = s.schedule, s.cancel
    done = 0
    for key in PAIR_KEYS:
        schedule(key, None, 3, 0.0)
        done += cancel(key)
    return done


@pytest.mark.benchmark(group="backoff-schedule-cancel")
def test_churn_heapq(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _heapq_churn, _heapq_prefilled, rounds=20) == PAIRS


@pytest.mark.benchmark(group="backoff-schedule-cancel")
def test_churn_hulk_schedule_at(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _hulk_churn, _hulk_prefilled, rounds=20) == PAIRS


@pytest.mark.benchmark(group="backoff-schedule-cancel")
def test_churn_hulk_schedule_with_jitter(benchmark: BenchmarkFixture) -> None:
    assert _pedantic(benchmark, _hulk_churn_with_jitter, _hulk_prefilled, rounds=20) == PAIRS
