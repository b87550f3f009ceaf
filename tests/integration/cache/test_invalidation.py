"""Two cache instances sharing one Redis: overwrites and deletes reach the other instance's L1."""

from pathlib import Path

import pytest

from hulk.cache import Cache
from hulk.cache.invalidation import Invalidation, decode_message, encode_flush_message, encode_message, parse_message
from tests.conftest import CacheFactory
from tests.integration.cache.helpers import raw_redis, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


async def _pair(redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path) -> tuple[Cache, Cache]:
    one = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "one"), instance_id="one")
    two = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "two"), instance_id="two")
    await one.start()
    await two.start()
    assert one.health()["invalidation"]["subscribed"]
    assert two.health()["invalidation"]["subscribed"]
    return one, two


def _received(cache: Cache) -> int:
    received: int = cache.metrics_snapshot()["invalidations"]["received"]
    return received


async def test_an_overwrite_replaces_the_other_instances_l1_entry(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one, two = await _pair(redis_server, make_cache, tmp_path)
    await one.set("price", 10)
    assert await two.get("price") == 10
    assert await two.get("price") == 10  # now served from two's L1
    await one.set("price", 11)
    await wait_until(lambda: _received(two) >= 1, what="two to receive the invalidation")
    assert await two.get("price") == 11
    assert _received(one) == 0  # an instance ignores its own messages
    assert await one.get("price") == 11


async def test_a_delete_reaches_the_other_instances_l1_and_l3(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one, two = await _pair(redis_server, make_cache, tmp_path)
    await one.namespace("t").set_many({"a": 1, "b": 2})
    assert await two.namespace("t").get_many(["a", "b"]) == {"a": 1, "b": 2}
    await two.snapshot()  # two's L3 now holds both
    await one.namespace("t").delete_many(["a", "b"])
    await wait_until(lambda: _received(two) >= 2, what="two to receive the invalidations")
    assert await two.namespace("t").get_many(["a", "b"]) == {}
    two._l1.clear()
    assert await two.namespace("t").get("a") is None  # the tombstone in L2 keeps L3 out of it
    assert two.metrics_snapshot()["requests"]["l3"]["hit"] == 0


async def test_resubscribing_after_a_gap_clears_l1(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    _, two = await _pair(redis_server, make_cache, tmp_path)
    await two.set("k", "cached")
    async with raw_redis(redis_server.url) as raw:
        await raw.client_kill_filter(_type="pubsub")
    await wait_until(lambda: two.health()["invalidation"]["reconnects"] >= 1, what="two to resubscribe")
    assert "k" not in two._l1
    assert await two.get("k") == "cached"  # from L2 again


async def test_malformed_messages_are_ignored(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one, two = await _pair(redis_server, make_cache, tmp_path)
    await two.set("k", 1)
    async with raw_redis(redis_server.url) as raw:
        for junk in (b"not json", b"[1]", b'{"src": 1, "keys": []}', b'{"src": "x", "keys": [1]}'):
            await raw.publish(one.channel, junk)
        await raw.publish(one.channel, encode_message("other", ["default:k"]))
    await wait_until(lambda: _received(two) >= 1, what="the valid message")
    assert two._subscriber is not None
    assert two._subscriber.malformed == 4
    assert "default:k" not in two._l1


def test_message_codec() -> None:
    assert decode_message(encode_message("me", ["a:b"])) == ("me", ["a:b"])
    assert decode_message(b"\xff") is None


def test_flush_messages_round_trip_and_bad_ones_are_malformed() -> None:
    assert parse_message(encode_flush_message("me", "t1")) == Invalidation("me", [], True, "t1")
    assert parse_message(encode_flush_message("me", None)) == Invalidation("me", [], True, None)
    assert parse_message(encode_message("me", ["a:b"])) == Invalidation("me", ["a:b"])
    assert parse_message(b'{"src": "me", "keys": [], "flush": 3}') is None
    assert parse_message(b"[1]") is None
    assert decode_message(encode_flush_message("me", "t1")) == ("me", [])  # what an older reader sees


def test_a_flush_message_carries_its_time() -> None:
    assert parse_message(encode_flush_message("me", "t1", 12.5)) == Invalidation("me", [], True, "t1", 12.5)
    assert parse_message(b'{"src": "me", "keys": [], "flush": "t1"}') == Invalidation("me", [], True, "t1", 0.0)
    assert parse_message(b'{"src": "me", "keys": [], "flush": "t1", "at": "x"}') is None
