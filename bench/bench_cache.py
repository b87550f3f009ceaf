"""L1Cache.get on a hit against cachetools' LRUCache.get, a functools.lru_cache hit and dict.get.

Run: `.venv/bin/python -m pytest bench/bench_cache.py --benchmark-only -q`. All four cases are in the
group "cache-get-hit", so the table's ratios come from one run. Each case times one call on a key that
is present, in a cache holding 4,000 of its 5,000 slots.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import cachetools
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hulk._native import L1Cache

CAPACITY = 5_000
KEYS = [f"user:{i}:profile" for i in range(4_000)]
KEY = KEYS[1_234]
# A 50 µs minimum round makes pytest-benchmark run hundreds of calls per round in every case, so no
# case pays the timer's own cost per call (its calibration otherwise picks 1 call per round for the
# slower ones on a noisy machine).
GROUP = pytest.mark.benchmark(group="cache-get-hit", min_time=0.00005, warmup=True)


def _warm(set_: Callable[[str, int], Any]) -> None:
    for i, k in enumerate(KEYS):
        set_(k, i)


@GROUP
def test_hulk_l1cache_get(benchmark: BenchmarkFixture) -> None:
    cache = L1Cache(CAPACITY)
    _warm(cache.set)
    assert benchmark(cache.get, KEY) == 1_234


@GROUP
def test_hulk_l1cache_get_bytes_key(benchmark: BenchmarkFixture) -> None:
    cache = L1Cache(CAPACITY)
    for i, k in enumerate(KEYS):
        cache.set(k.encode(), i)
    assert benchmark(cache.get, KEY.encode()) == 1_234


@GROUP
def test_hulk_l1cache_get_with_ttl(benchmark: BenchmarkFixture) -> None:
    # Entries with a TTL read the monotonic clock on every hit.
    cache = L1Cache(CAPACITY, ttl=3_600)
    _warm(cache.set)
    assert benchmark(cache.get, KEY) == 1_234


@GROUP
def test_cachetools_lrucache_get(benchmark: BenchmarkFixture) -> None:
    cache: cachetools.LRUCache[str, int] = cachetools.LRUCache(CAPACITY)
    _warm(cache.__setitem__)
    assert benchmark(cache.get, KEY) == 1_234


@GROUP
def test_functools_lru_cache_hit(benchmark: BenchmarkFixture) -> None:
    values = {k: i for i, k in enumerate(KEYS)}

    @functools.lru_cache(maxsize=CAPACITY)
    def load(key: str) -> int:
        return values[key]

    for k in KEYS:
        load(k)
    assert benchmark(load, KEY) == 1_234


@GROUP
def test_dict_get(benchmark: BenchmarkFixture) -> None:
    d = {k: i for i, k in enumerate(KEYS)}
    assert benchmark(d.get, KEY) == 1_234
