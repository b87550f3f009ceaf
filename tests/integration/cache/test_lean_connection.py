"""The L2 read path's lean connection against a real redis-server: SELECT, script reloads, a stalled Redis."""

import asyncio
from pathlib import Path

import pytest

from hulk.cache.codec import decode
from tests.conftest import CacheFactory
from tests.integration.cache.helpers import raw_redis, stored
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


async def test_the_database_number_of_the_url_is_selected(redis_server: RedisServer, make_cache: CacheFactory) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/3"
    cache = make_cache(l2_url=url)
    await cache.start()
    await cache.set("k", "three")
    assert await cache.get_or_compute("c", lambda: "computed") == "computed"
    await cache.drain()  # the computed value's fill goes out now
    async with raw_redis(url) as raw:
        record = await stored(raw, "hulk:cache:default:k")
        assert record is not None
        assert decode(record).value == "three"
        assert await stored(raw, "hulk:cache:default:c") is not None
    async with raw_redis(redis_server.url) as raw:
        assert await stored(raw, "hulk:cache:default:k") is None  # not in database 0
    cache._l1.clear()
    assert await cache.get("k") == "three"


async def test_fills_still_land_after_redis_forgot_the_script(
    redis_server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(l2_url=redis_server.url)
    await cache.start()
    assert await cache.get_or_compute("one", lambda: 1) == 1
    await cache.drain()
    async with raw_redis(redis_server.url) as raw:
        assert await stored(raw, "hulk:cache:default:one") is not None
        await raw.script_flush()
        assert await cache.get_or_compute("two", lambda: 2, ttl=30) == 2
        assert await cache.get_or_compute("three", lambda: 3) == 3
        await cache.drain()
        assert await stored(raw, "hulk:cache:default:two") is not None
        assert 0 < await raw.pttl("hulk:cache:default:two") <= 30_000  # the batch script keeps each TTL
        assert 30_000 < await raw.pttl("hulk:cache:default:three") <= 3_600_000
    assert cache.metrics_snapshot()["requests"]["l2"]["error"] == 0


async def test_a_stalled_redis_times_out_without_failing_the_caller(
    redis_server: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(l2_url=redis_server.url, l2_socket_timeout=0.05, l2_failure_threshold=50)
    await cache.start()
    await cache.set("k", 1)
    cache._l1.clear()
    async with raw_redis(redis_server.url) as raw:
        await raw.client_pause(300, all=True)
        assert await cache.get("k") is None  # no answer within the socket timeout: a miss, no error
        assert cache.metrics_snapshot()["requests"]["l2"]["error"] == 1
    # Once Redis answers again a later call reconnects and reads the value (polled: the pause ends
    # on Redis's clock, and the breaker may have opened meanwhile and be waiting for its probe).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await cache.get("k") != 1:
        assert loop.time() < deadline, "Redis never answered again"
        await asyncio.sleep(0.01)


async def test_a_unix_socket_url_goes_through_redis_py(make_cache: CacheFactory, tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    with RedisServer(extra_args=["--unixsocket", str(socket), "--unixsocketperm", "700"]) as server:
        cache = make_cache(l2_url=f"unix://{socket}?db=0")
        other = make_cache(l2_url=f"unix://{socket}?db=0")
        await cache.start()
        await other.start()
        assert cache._l2 is not None
        assert cache._l2._fast is None
        await cache.set("k", "v")
        assert await cache.get_or_compute("c", lambda: "computed") == "computed"
        await cache.drain()
        assert await other.get_many(["k", "c"]) == {"k": "v", "c": "computed"}
        other._l1.clear()
        assert await other.get("k") == "v"
        await cache.delete("k")
        async with raw_redis(server.url) as raw:
            record = await stored(raw, "hulk:cache:default:k")
            assert record is not None
            assert decode(record).tombstone


def test_the_lean_connection_works_on_uvloop(redis_server: RedisServer) -> None:
    # The service runs on uvloop, whose transports are not asyncio.Transport subclasses.
    import uvloop

    from hulk.cache.resp import FastConnection

    async def round_trip() -> list[object]:
        fast = FastConnection(redis_server.url, timeout=2.0, connect_timeout=2.0)
        try:
            await fast.execute("SET", "uv:k", b"v")
            return [await fast.execute("GET", "uv:k"), await fast.pipeline([["GET", "uv:k"], ["DEL", "uv:k"]])]
        finally:
            fast.close()

    assert uvloop.run(round_trip()) == [b"v", [b"v", 1]]
