"""Read path and back-fill, TTLs at each level, warm-up and tenants, against a real Redis and RocksDB."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hulk.cache.codec import decode
from tests.conftest import CacheFactory
from tests.integration.cache.helpers import raw_redis, stored
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


async def test_read_path_fills_the_upper_levels(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    writer = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "w"))
    reader = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "r"))
    await writer.start()
    await reader.start()
    assert reader.mode == "l1+l2+l3"
    assert reader.health()["status"] == "ok"

    await writer.set("k", {"v": 1})
    assert await reader.get("k") == {"v": 1}  # L2 hit, fills L1 and stages L3
    assert await reader.get("k") == {"v": 1}  # L1 hit
    snap = reader.metrics_snapshot()
    assert snap["requests"]["l1"] == {"hit": 1, "miss": 1}
    assert snap["requests"]["l2"]["hit"] == 1
    assert snap["requests"]["l3"] == {"hit": 0, "miss": 0, "error": 0}
    assert await reader.snapshot() == 1

    # Redis loses the key (say it restarted): L3 answers, and puts it back into L2 and L1.
    async with raw_redis(redis_server.url) as raw:
        await raw.flushall()
        fresh = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "r2"))
        reader_l1_cleared = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "r"))
        await reader.stop()
        await reader_l1_cleared.start()
        reader_l1_cleared._l1.clear()
        assert await reader_l1_cleared.get("k") == {"v": 1}
        assert reader_l1_cleared.metrics_snapshot()["requests"]["l3"]["hit"] == 1
        record = await stored(raw, "hulk:cache:default:k")
        assert record is not None
        assert decode(record).value == {"v": 1}
        await fresh.start()
        assert await fresh.get("k") == {"v": 1}
        assert fresh.metrics_snapshot()["requests"]["l2"]["hit"] == 1


async def test_compute_fills_every_level(redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"))
    await cache.start()
    assert await cache.get_or_compute("c", lambda: [1, 2], ttl=30) == [1, 2]
    await cache.drain()  # computed values reach Redis in the background: wait for them
    async with raw_redis(redis_server.url) as raw:
        record = await stored(raw, "hulk:cache:default:c")
        assert record is not None
        assert decode(record).value == [1, 2]
        assert 0 < await raw.pttl("hulk:cache:default:c") <= 30_000
    snap = cache.metrics_snapshot()
    assert snap["l3"]["snapshot_entries"] == 1  # drain() wrote the L3 snapshot too
    assert snap["computes"] == 1
    assert snap["requests"]["l2"]["miss"] == 1
    assert snap["requests"]["l3"]["miss"] == 1
    assert snap["latency_seconds"]["compute"]["count"] == 1
    assert snap["latency_seconds"]["l2"]["count"] >= 1


async def test_get_many_and_set_many_use_every_level(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "1"))
    two = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "2"))
    await one.start()
    await two.start()
    await one.set_many({"a": 1, "b": b"raw", "c": {"x": None}}, ttl=60)
    await two.set("local", "here")
    assert await two.get_many(["a", "b", "c", "local", "none"]) == {
        "a": 1,
        "b": b"raw",
        "c": {"x": None},
        "local": "here",
    }
    assert two.metrics_snapshot()["requests"]["l2"]["hit"] == 3


async def test_ttl_expiry_at_each_level(redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"), l1_ttl=0.1)
    await cache.start()
    await cache.set("long", "still in L2", ttl=60)
    await cache.set("short", "gone everywhere", ttl=0.2)
    await cache.snapshot()
    async with raw_redis(redis_server.url) as raw:
        assert 0 < await raw.pttl("hulk:cache:default:short") <= 200
        await asyncio.sleep(0.3)  # the TTLs have to run out: real time, not synchronisation
        # L1 expired both (l1_ttl 0.1 s); Redis expired "short" by itself.
        assert await raw.exists("hulk:cache:default:short") == 0
    assert await cache.get("long") == "still in L2"
    assert await cache.get("short") is None
    snap = cache.metrics_snapshot()
    assert snap["requests"]["l1"]["hit"] == 0
    assert snap["requests"]["l2"]["hit"] == 1
    # L3 still had "short" on disk, past its expiry: read as a miss and dropped.
    assert snap["requests"]["l3"] == {"hit": 0, "miss": 1, "error": 0}


async def test_restart_warms_l1_from_l3_checked_against_redis(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    path = str(tmp_path / "l3")
    first = make_cache(l2_url=redis_server.url, l3_path=path)
    await first.start()
    await first.set_many({"same": 1, "overwritten": "old", "deleted": "old", "only-l3": "kept"})
    await first.stop()

    other = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "other"))
    await other.start()
    await other.set("overwritten", "new")
    await other.delete("deleted")
    async with raw_redis(redis_server.url) as raw:
        await raw.delete("hulk:cache:default:only-l3")

    second = make_cache(l2_url=redis_server.url, l3_path=path)
    await second.start()
    assert second.metrics_snapshot()["l3"]["warmed"] == 3
    got: dict[str, Any] = {}
    for key in ("same", "overwritten", "deleted", "only-l3"):
        got[key] = await second.get(key)
    assert got == {"same": 1, "overwritten": "new", "deleted": None, "only-l3": "kept"}
    assert second.metrics_snapshot()["requests"]["l1"]["hit"] == 3


async def test_tenants_never_read_each_other(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "1"))
    two = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "2"), namespace="tenant-b")
    await one.start()
    await two.start()
    await one.namespace("tenant-a").set("invoice", {"total": 10})
    assert await two.get("invoice") is None
    assert await two.get_many(["invoice"]) == {}
    assert await one.namespace("tenant-b").get("invoice") is None
    assert await two.namespace("tenant-a").get("invoice") == {"total": 10}
    await two.set("invoice", {"total": 99})
    assert await one.namespace("tenant-a").get("invoice") == {"total": 10}
    async with raw_redis(redis_server.url) as raw:
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await raw.keys("hulk:cache:*"))
    assert keys == ["hulk:cache:tenant-a:invoice", "hulk:cache:tenant-b:invoice"]


async def test_single_flight_under_100_concurrent_misses(redis_server: RedisServer, make_cache: CacheFactory) -> None:
    cache = make_cache(l2_url=redis_server.url)
    await cache.start()
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def compute() -> str:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return "once"

    calls = [asyncio.create_task(cache.get_or_compute("hot", compute)) for _ in range(100)]
    await started.wait()  # the leader passed L2 and L3 and is computing; the others wait for it
    release.set()
    assert await asyncio.gather(*calls) == ["once"] * 100
    assert runs == 1
    snap = cache.metrics_snapshot()
    assert snap["singleflight_joined"] == 99
    assert snap["requests"]["l2"]["miss"] == 1


async def test_password_in_the_url(make_cache: CacheFactory) -> None:
    with RedisServer(extra_args=["--requirepass", "s3cret"]) as server:
        good = make_cache(l2_url=f"redis://:s3cret@127.0.0.1:{server.port}/0")
        bad = make_cache(l2_url=f"redis://:wrong@127.0.0.1:{server.port}/0", l2_retry_interval=60)
        await good.start()
        await bad.start()
        assert good.mode == "l1+l2"
        await good.set("k", 1)
        assert await bad.get("k") is None
        health = bad.health()
        assert health["status"] == "degraded"
        assert "wrong" not in str(health)
        assert health["l2"]["url"] == f"redis://:***@127.0.0.1:{server.port}/0"
        await good.stop()
        await bad.stop()


async def test_a_computed_value_never_replaces_a_set_value(redis_server: RedisServer, make_cache: CacheFactory) -> None:
    cache = make_cache(l2_url=redis_server.url)
    other = make_cache(l2_url=redis_server.url)
    await cache.start()
    await other.start()
    # Computed here, while another instance sets the key before the fill reaches Redis.
    assert await cache.get_or_compute("k", lambda: "computed") == "computed"
    await other.set("k", "set")
    await cache.drain()
    async with raw_redis(redis_server.url) as raw:
        record = await stored(raw, "hulk:cache:default:k")
    assert record is not None
    assert decode(record).value == "set"

    # A set right after a compute in the same instance wins too.
    assert await cache.get_or_compute("j", lambda: "computed") == "computed"
    await cache.set("j", "set")
    await cache.drain()
    assert await other.get("j") == "set"


async def test_a_computed_value_replaces_a_tombstone(redis_server: RedisServer, make_cache: CacheFactory) -> None:
    cache = make_cache(l2_url=redis_server.url)
    other = make_cache(l2_url=redis_server.url)
    await cache.start()
    await other.start()
    await cache.set("k", "old")
    await cache.delete("k")
    assert await cache.get_or_compute("k", lambda: "new") == "new"
    await cache.drain()
    assert await other.get("k") == "new"
    assert await other.get_or_compute("k", lambda: "not again") == "new"


async def test_a_small_pool_makes_writes_wait_not_fail(redis_server: RedisServer, make_cache: CacheFactory) -> None:
    cache = make_cache(l2_url=redis_server.url, l2_max_connections=2)  # one is the subscription's
    other = make_cache(l2_url=redis_server.url)
    await cache.start()
    await other.start()
    await asyncio.gather(*(cache.set(f"k{i}", i) for i in range(30)))
    snap = cache.metrics_snapshot()
    assert snap["requests"]["l2"]["error"] == 0
    assert snap["requests"]["l2"]["skipped"] == 0
    assert cache.health()["l2"]["dirty"] == 0
    assert await other.get_many([f"k{i}" for i in range(30)]) == {f"k{i}": i for i in range(30)}


async def test_concurrent_misses_share_l2_round_trips(redis_server: RedisServer, make_cache: CacheFactory) -> None:
    writer = make_cache(l2_url=redis_server.url)
    reader = make_cache(l2_url=redis_server.url)
    await writer.start()
    await reader.start()
    await writer.set_many({f"k{i}": i for i in range(50)})
    keys = [f"k{i}" for i in range(60)]
    results = await asyncio.gather(*(reader.get(key) for key in keys))
    assert results == [*range(50), *[None] * 10]
    assert reader._l2 is not None
    assert reader._l2.batched_reads > 0  # the calls made during the first MGET went out together
    assert reader.metrics_snapshot()["requests"]["l2"] == {"hit": 50, "miss": 10, "error": 0, "skipped": 0}
