"""Redis taken away mid-test and brought back: no errors to callers, L1 + L3 carry the load, L2 recovers."""

import asyncio
import functools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hulk.cache.codec import decode
from tests.conftest import CacheFactory
from tests.integration.cache.helpers import raw_redis, stored, wait_until
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.integration


async def test_redis_stopped_and_restarted(redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"), l2_retry_interval=0.2)
    await cache.start()
    await cache.set_many({"a": 1, "b": 2})
    await cache.snapshot()
    cache._l1.delete("default:b")  # so that reading b needs a lower level

    with capture_logs() as logs:
        redis_server.stop()
        # Every call succeeds while Redis is gone; the first failures open the breaker.
        for i in range(20):
            assert await cache.get("a") == 1
            assert await cache.get("b") == 2  # from L3
            cache._l1.delete("default:b")
            assert await cache.get(f"missing-{i}") is None
            assert await cache.get_or_compute(f"c{i}", functools.partial(int, i)) == i
        await cache.set("during", "outage")
        await cache.set_many({"x": 1})
        await cache.delete("a")
        assert await cache.get_many(["a", "x", "during"]) == {"x": 1, "during": "outage"}

        health = cache.health()
        assert health["status"] == "degraded"
        assert health["mode"] == "l1+l3"
        assert health["reasons"] == ["l2 unavailable"]
        assert health["l2"]["dirty"] == 23  # 20 computed, 2 set, 1 deleted
        snap = cache.metrics_snapshot()
        assert snap["l2_breaker"]["state"] in ("open", "half_open")
        assert [breaker.name for breaker in cache.breakers()] == ["cache-l2"]
        errors = snap["requests"]["l2"]["error"]
        assert errors <= 3  # only the calls that opened the breaker touched the dead socket
        assert snap["requests"]["l2"]["skipped"] > 50

        # More calls while the breaker is open never touch the socket.
        for i in range(50):
            await cache.get(f"again-{i}")
        assert cache.metrics_snapshot()["requests"]["l2"]["error"] == errors

        redis_server.start()
        await wait_until(lambda: cache.health()["status"] == "ok", what="L2 to recover")
    events = [entry["event"] for entry in logs]
    assert events.count("cache.l2.unavailable") == 1
    assert "cache.l2.recovered" in events

    # What was written during the outage reached Redis (deletes as tombstones).
    async with raw_redis(redis_server.url) as raw:
        during = await stored(raw, "hulk:cache:default:during")
        deleted = await stored(raw, "hulk:cache:default:a")
    assert during is not None
    assert decode(during).value == "outage"
    assert deleted is not None
    assert decode(deleted).tombstone
    assert cache.metrics_snapshot()["l2_resynced"] == 23
    assert cache.health()["l2"]["outages"] == 1
    await cache.set("after", 1)
    assert cache.metrics_snapshot()["requests"]["l2"]["error"] == errors


async def test_redis_killed_under_concurrent_load(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"), l2_retry_interval=0.2)
    await cache.start()

    async def worker(n: int) -> None:
        for i in range(50):
            key = f"k{(n * 7 + i) % 40}"
            assert await cache.get_or_compute(key, key.upper) == key.upper()
            await cache.set(f"w{n}", i)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(worker(n)) for n in range(20)]
    await asyncio.sleep(0.005)
    redis_server.kill()
    await asyncio.gather(*tasks)
    assert cache.health()["status"] == "degraded"
    redis_server.start()
    await wait_until(lambda: cache.health()["status"] == "ok", what="L2 to recover")
    await asyncio.gather(*(worker(n) for n in range(5)))


async def test_start_without_redis_runs_on_l1_and_l3_and_joins_later(make_cache: CacheFactory, tmp_path: Path) -> None:
    server = RedisServer()
    try:
        server.port = free_port()
        cache = make_cache(l2_url=server.url, l3_path=str(tmp_path / "l3"), l2_retry_interval=0.1)
        with capture_logs() as logs:
            await cache.start()
            assert cache.ready()
            assert cache.mode == "l1+l3"
            await cache.set("k", "v")
            assert await cache.get("k") == "v"
            for i in range(20):
                assert await cache.get(f"m{i}") is None
        assert [entry["event"] for entry in logs].count("cache.l2.unavailable") == 1
        assert cache.metrics_snapshot()["requests"]["l2"]["error"] == 0
        server.start()
        await wait_until(lambda: cache.mode == "l1+l2+l3", what="L2 to join")
        await wait_until(lambda: cache.health()["invalidation"]["subscribed"], what="the subscription")
        async with raw_redis(server.url) as raw:
            assert await raw.exists("hulk:cache:default:k") == 1
    finally:
        server.close()
