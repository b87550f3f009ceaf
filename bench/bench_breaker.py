"""CircuitBreaker against pybreaker, measured in the same run.

Each benchmark makes CALLS guarded calls per round with the bound methods in locals, so the Python
loop costs the same in every row of a group and the ratios compare the breakers themselves; divide
a row's time by CALLS for the cost of one call.

Group "breaker call": the overhead a worker pays to guard one call with a closed breaker.
- noop: a bare `noop()` call, the floor of every row.
- pybreaker: `pybreaker.CircuitBreaker().call(noop)`.
- hulk: `if allow(): noop(); record_success(0.0)` on a count window, the pair the engine makes.
- hulk time window: the same pair on a time window (which reads the clock on each record).
Targets: the hulk pair >= 10x faster than pybreaker's call, and under 300 ns per call.

Group "breaker open": refusing a call while open (pybreaker raises; hulk's allow returns False).

Run: .venv/bin/python -m pytest bench/bench_breaker.py --benchmark-only -q
"""

from __future__ import annotations

from itertools import repeat

import pybreaker
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hulk._native import CircuitBreaker

CALLS = 1_000

CALL = "breaker call: 1000 guarded noop() calls, closed"
OPEN = "breaker open: 1000 refused calls"


def noop() -> None:
    return None


def hulk_pairs(breaker: CircuitBreaker) -> None:
    allow, record = breaker.allow, breaker.record_success
    for _ in repeat(None, CALLS):
        if allow():
            noop()
            record(0.0)


@pytest.mark.benchmark(group=CALL)
def test_call_noop(benchmark: BenchmarkFixture) -> None:
    def run() -> None:
        for _ in repeat(None, CALLS):
            noop()

    benchmark(run)


@pytest.mark.benchmark(group=CALL)
def test_call_pybreaker(benchmark: BenchmarkFixture) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    call = breaker.call

    def run() -> None:
        for _ in repeat(None, CALLS):
            call(noop)

    benchmark(run)
    assert breaker.current_state == "closed"


@pytest.mark.benchmark(group=CALL)
def test_call_hulk(benchmark: BenchmarkFixture) -> None:
    breaker = CircuitBreaker(window_size=100, minimum_calls=100)
    benchmark(hulk_pairs, breaker)
    assert breaker.metrics()["calls"] == 100


@pytest.mark.benchmark(group=CALL)
def test_call_hulk_time_window(benchmark: BenchmarkFixture) -> None:
    breaker = CircuitBreaker(window_type="time", window_size=10, bucket_width=0.1, minimum_calls=100)
    benchmark(hulk_pairs, breaker)
    assert breaker.metrics()["state"] == "closed"


@pytest.mark.benchmark(group=OPEN)
def test_open_pybreaker(benchmark: BenchmarkFixture) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    breaker.open()
    call = breaker.call

    def run() -> None:
        for _ in repeat(None, CALLS):
            try:
                call(noop)
            except pybreaker.CircuitBreakerError:
                continue
            raise AssertionError("pybreaker let a call through while open")

    benchmark(run)


@pytest.mark.benchmark(group=OPEN)
def test_open_hulk(benchmark: BenchmarkFixture) -> None:
    breaker = CircuitBreaker(wait_open=3600.0)
    breaker.force_open()
    allow = breaker.allow

    def run() -> None:
        for _ in repeat(None, CALLS):
            if allow():
                raise AssertionError("hulk let a call through while open")

    benchmark(run)
