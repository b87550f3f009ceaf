"""hulk's multi-level cache: `get` latency per level, and `get_or_compute` throughput against peers.

Run (release build only; starts its own redis-server on a free port):
    .venv/bin/python -m pytest bench/bench_cache_multilevel.py --benchmark-only -q

Groups:
- `cache-get-latency`: one round = 1,000 `get` calls served by one level (L1 hit; L2 hit with the L1
  entry removed first; L3 hit with no Redis configured). Per-call p50/p99 go to `extra_info`.
- `cache-get-or-compute-95-callers-{1,32}`: one round = 2,000 `get_or_compute` calls, 95% on 200 warm
  keys and 5% on new keys (computed and stored), made by one caller in turn or by 32 concurrent
  callers: hulk (L1 + Redis + RocksDB) against cashews (Redis, and Redis with its client-side cache)
  and aiocache (Redis), all against the same redis-server in the same run. Throughput = 2,000 / mean.
L1 hit ratio against LRU and Belady's optimum on Zipf traces: see bench/cache_hit_ratio.py.
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiocache import RedisCache
from cashews import Cache as CashewsCache
from pytest_benchmark.fixture import BenchmarkFixture
from tests.servers import RedisServer

from hulk.cache import Cache

GET_CALLS = 1_000
ROUNDS = 25
OPS = 2_000
HOT_KEYS = 200
HIT_RATE = 0.95
VALUE = {"user": 42, "plan": "pro", "quota": [1, 2, 3]}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()
        gc.collect()  # what a client left open is reported now, under the test's warning filters


@pytest.fixture
def tmp_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="hulk-bench-l3-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_us": round(cuts[49] * 1e6, 2), "p99_us": round(cuts[98] * 1e6, 2)}


def _measure_gets(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    cache: Cache,
    before_each: Callable[[str], object],
) -> None:
    keys = [f"k{i}" for i in range(100)]
    samples: list[float] = []

    async def round_() -> None:
        for i in range(GET_CALLS):
            key = keys[i % len(keys)]
            before_each(key)
            started = time.perf_counter()
            value = await cache.get(key)
            samples.append(time.perf_counter() - started)
            assert value is not None

    benchmark.pedantic(lambda: loop.run_until_complete(round_()), rounds=20, warmup_rounds=2)  # type: ignore[no-untyped-call]  # pytest-benchmark leaves it unannotated
    benchmark.extra_info.update(_percentiles(samples))
    benchmark.extra_info["calls_per_round"] = GET_CALLS


def _start(loop: asyncio.AbstractEventLoop, cache: Cache) -> Cache:
    loop.run_until_complete(cache.start())
    loop.run_until_complete(cache.set_many({f"k{i}": VALUE for i in range(100)}))
    loop.run_until_complete(cache.snapshot())
    return cache


@pytest.mark.benchmark(group="cache-get-latency")
def test_get_l1_hit(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, redis_server: RedisServer, tmp_dir: str
) -> None:
    cache = _start(loop, Cache(l2_url=redis_server.url, l3_path=tmp_dir))
    try:
        _measure_gets(benchmark, loop, cache, lambda key: None)
        assert cache.metrics_snapshot()["requests"]["l1"]["miss"] == 0
    finally:
        loop.run_until_complete(cache.stop())


@pytest.mark.benchmark(group="cache-get-latency")
def test_get_l2_hit(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, redis_server: RedisServer, tmp_dir: str
) -> None:
    cache = _start(loop, Cache(l2_url=redis_server.url, l3_path=tmp_dir))
    try:
        _measure_gets(benchmark, loop, cache, lambda key: cache._l1.delete("default:" + key))
        snap = cache.metrics_snapshot()["requests"]
        assert snap["l3"]["hit"] == 0
        assert snap["l2"]["hit"] > 0
    finally:
        loop.run_until_complete(cache.stop())


@pytest.mark.benchmark(group="cache-get-latency")
def test_get_l3_hit(benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, tmp_dir: str) -> None:
    cache = _start(loop, Cache(l3_path=tmp_dir))
    try:
        _measure_gets(benchmark, loop, cache, lambda key: cache._l1.delete("default:" + key))
        assert cache.metrics_snapshot()["requests"]["l3"]["hit"] > 0
    finally:
        loop.run_until_complete(cache.stop())


# --- get_or_compute throughput at a 95% hit rate ------------------------------------------------

# One caller awaiting each call in turn, and 32 concurrent callers (a server's handlers) sharing
# the same 2,000 calls per round. The group name carries the number of callers.
CALLERS = pytest.mark.parametrize("callers", [1, 32], ids=["1-caller", "32-callers"])


class _Workload:
    """2,000 keys per round: 95% drawn from the warm set, 5% never seen before."""

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self.round = 0
        self.computed = 0

    def keys(self) -> list[str]:
        self.round += 1
        misses = int(OPS * (1 - HIT_RATE))
        keys = [f"hot{self.rng.randrange(HOT_KEYS)}" for _ in range(OPS - misses)]
        keys += [f"new{self.round}-{i}" for i in range(misses)]
        self.rng.shuffle(keys)
        return keys

    async def compute(self) -> dict[str, Any]:
        self.computed += 1
        return VALUE


def _throughput(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    workload: _Workload,
    callers: int,
    call: Callable[[str], Awaitable[Any]],
) -> None:
    async def caller(keys: list[str]) -> None:
        for key in keys:
            await call(key)

    async def round_(keys: list[str]) -> None:
        await asyncio.gather(*(caller(keys[i::callers]) for i in range(callers)))

    benchmark.group = f"cache-get-or-compute-95-callers-{callers}"

    rounds = iter([workload.keys() for _ in range(ROUNDS + 1)])  # made before timing starts
    benchmark.pedantic(lambda: loop.run_until_complete(round_(next(rounds))), rounds=ROUNDS, warmup_rounds=1)  # type: ignore[no-untyped-call]  # pytest-benchmark leaves it unannotated
    benchmark.extra_info["ops_per_round"] = OPS
    benchmark.extra_info["callers"] = callers
    benchmark.extra_info["miss_rate"] = round(workload.computed / (OPS * (ROUNDS + 1)), 4)


@pytest.mark.benchmark(group="cache-get-or-compute-95")  # suffixed with the number of callers
@CALLERS
def test_hulk_get_or_compute(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    redis_server: RedisServer,
    tmp_dir: str,
    callers: int,
) -> None:
    loop.run_until_complete(_flush(redis_server))
    cache = Cache(l2_url=redis_server.url, l3_path=tmp_dir, key_prefix="bench:hulk:")
    loop.run_until_complete(cache.start())
    loop.run_until_complete(cache.set_many({f"hot{i}": VALUE for i in range(HOT_KEYS)}, ttl=600))
    workload = _Workload()
    try:
        _throughput(
            benchmark, loop, workload, callers, lambda key: cache.get_or_compute(key, workload.compute, ttl=600)
        )
        benchmark.extra_info["l1_hit_ratio"] = round(cache.metrics_snapshot()["hit_ratio"]["l1"], 4)
    finally:
        loop.run_until_complete(cache.stop())


@pytest.mark.benchmark(group="cache-get-or-compute-95")  # suffixed with the number of callers
@CALLERS
# cashews calls redis-py's deprecated close().
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("client_side", [False, True], ids=["redis", "redis-client-side"])
def test_cashews_get_or_set(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    redis_server: RedisServer,
    client_side: bool,
    callers: int,
) -> None:
    loop.run_until_complete(_flush(redis_server))
    cache = CashewsCache()
    cache.setup(redis_server.url, client_side=client_side)

    async def warm() -> None:
        await cache.init()
        for i in range(HOT_KEYS):
            await cache.set(f"hot{i}", VALUE, expire=600)

    loop.run_until_complete(warm())
    workload = _Workload()
    try:
        _throughput(benchmark, loop, workload, callers, lambda key: cache.get_or_set(key, workload.compute, expire=600))
    finally:
        loop.run_until_complete(cache.close())


@pytest.mark.benchmark(group="cache-get-or-compute-95")  # suffixed with the number of callers
@CALLERS
# aiocache calls redis-py's deprecated setex() and close().
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_aiocache_get_then_set(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, redis_server: RedisServer, callers: int
) -> None:
    loop.run_until_complete(_flush(redis_server))

    async def make() -> Any:
        cache = RedisCache(endpoint="127.0.0.1", port=redis_server.port, namespace="bench-aiocache")
        for i in range(HOT_KEYS):
            await cache.set(f"hot{i}", VALUE, ttl=600)
        return cache

    cache = loop.run_until_complete(make())
    workload = _Workload()

    async def get_or_compute(key: str) -> Any:
        value = await cache.get(key)
        if value is None:
            value = await workload.compute()
            await cache.set(key, value, ttl=600)
        return value

    try:
        _throughput(benchmark, loop, workload, callers, get_or_compute)
    finally:
        loop.run_until_complete(cache.close())


async def _flush(server: RedisServer) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
