"""`Cache.flush`: one namespace (or all) emptied in L1, Redis and RocksDB, here and in the other instances."""

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hulk.cache import Cache
from tests.conftest import CacheFactory
from tests.integration.cache.helpers import raw_redis, stored, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

PREFIX = "hulk:cache:"


async def _filled(cache: Cache) -> None:
    await cache.namespace("a").set_many({"x": 1, "y": 2})
    await cache.namespace("b").set_many({"x": 10, "y": 20})
    await cache.snapshot()


async def _l3_record(cache: Cache, key: str) -> bytes | None:
    assert cache._l3 is not None
    return await cache._l3.get(key.encode())


async def _on_disk(cache: Cache, key: str) -> bytes | None:
    assert cache._l3 is not None
    return await cache._l3._run(cache._l3._get_sync, key.encode())


def _received(cache: Cache) -> int:
    received: int = cache.metrics_snapshot()["invalidations"]["received"]
    return received


async def test_flushing_one_namespace_leaves_the_others_intact_at_every_level(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"))
    await cache.start()
    await _filled(cache)
    async with raw_redis(redis_server.url) as raw:
        await raw.set("unrelated", b"kept")  # other data in the same Redis database
        await raw.set("other:cache:a:x", b"kept")  # another cache's prefix

        assert await cache.flush("a") == 6  # two keys in each of L1, Redis and L3

        assert "a:x" not in cache._l1
        assert "a:y" not in cache._l1
        assert "b:x" in cache._l1
        assert "b:y" in cache._l1
        assert await stored(raw, PREFIX + "a:x") is None
        assert await stored(raw, PREFIX + "a:y") is None
        assert await stored(raw, PREFIX + "b:x") is not None
        assert await stored(raw, "unrelated") == b"kept"
        assert await stored(raw, "other:cache:a:x") == b"kept"
    assert await _l3_record(cache, "a:x") is None
    assert await _l3_record(cache, "b:x") is not None
    await cache.snapshot()
    assert await _on_disk(cache, "a:x") is None
    assert await _on_disk(cache, "b:x") is not None

    assert await cache.namespace("a").get_many(["x", "y"]) == {}
    assert await cache.namespace("b").get_many(["x", "y"]) == {"x": 10, "y": 20}
    assert await cache.namespace("a").get_or_compute("x", lambda: 3) == 3  # computed again


async def test_a_value_set_after_a_flush_survives_it(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"))
    await cache.start()
    await _filled(cache)
    await cache.flush("a")
    await cache.namespace("a").set("x", "new")
    await cache.snapshot()  # the range delete and the new value go out in one batch, in that order
    assert await _on_disk(cache, "a:x") is not None
    cache._l1.clear()
    assert await cache.namespace("a").get("x") == "new"


async def test_a_flush_reaches_the_other_instances_l1_and_l3(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "one"), instance_id="one")
    two = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "two"), instance_id="two")
    await one.start()
    await two.start()
    await _filled(one)
    assert await two.namespace("a").get_many(["x", "y"]) == {"x": 1, "y": 2}
    assert await two.namespace("b").get("x") == 10
    assert "a:x" in two._l1  # two now serves both namespaces from its L1
    await two.snapshot()

    before = _received(two)
    assert await one.flush("a") == 6
    await wait_until(lambda: _received(two) > before, what="two to receive the flush")

    assert "a:x" not in two._l1
    assert "b:x" in two._l1
    assert await _l3_record(two, "a:x") is None
    assert await _l3_record(two, "b:x") is not None
    assert await two.namespace("a").get_many(["x", "y"]) == {}
    assert await two.namespace("b").get("x") == 10
    assert _received(one) == 0  # an instance ignores its own messages


async def test_flushing_everything_keeps_other_data_in_redis(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"))
    await cache.start()
    await _filled(cache)
    await cache.delete("gone")  # a tombstone is a Redis key too
    async with raw_redis(redis_server.url) as raw:
        await raw.set("unrelated", b"kept")
        assert await cache.flush() == 4 + 5 + 4
        assert await raw.keys(PREFIX + "*") == [PREFIX.encode() + b"flushes"]  # only the flush log
        assert await stored(raw, "unrelated") == b"kept"
    assert len(cache._l1) == 0
    assert await _l3_record(cache, "b:x") is None


async def test_a_flush_with_redis_stopped_empties_l1_and_l3_without_error(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"), l2_retry_interval=0.2)
    await cache.start()
    await _filled(cache)
    redis_server.stop()
    with capture_logs() as logs:
        assert await cache.flush("a") == 4  # L1 and L3 only
    assert "cache.flush.l2_deferred" in [entry["event"] for entry in logs]
    assert cache._pending_flushes == {"a"}
    assert await cache.namespace("a").get("x") is None
    assert await cache.namespace("b").get("x") == 10
    assert await _l3_record(cache, "b:y") is not None
    redis_server.start()
    await wait_until(lambda: not cache._pending_flushes, what="the deferred flush to reach Redis")
    assert cache.health()["status"] == "ok"


async def test_the_redis_part_of_a_flush_is_done_when_redis_is_back(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    cache = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "l3"), l2_retry_interval=0.2)
    await cache.start()
    await _filled(cache)
    assert cache._l2 is not None
    assert cache._breaker is not None
    # Redis keeps its data but the cache believes it gone (as after a network partition).
    cache._breaker.force_open()
    cache._l2._mark_down(ConnectionError("partitioned"))
    assert await cache.flush("a") == 4
    assert cache._pending_flushes == {"a"}
    async with raw_redis(redis_server.url) as raw:
        assert await stored(raw, PREFIX + "a:x") is not None  # not reached yet
        await wait_until(lambda: not cache._pending_flushes, what="the flush to reach Redis")
        assert await stored(raw, PREFIX + "a:x") is None
        assert await stored(raw, PREFIX + "b:x") is not None


async def test_a_bad_namespace_is_refused(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.start()
    with pytest.raises(ValueError, match="namespace must be 1-128 characters"):
        await cache.flush("a:b")
    with pytest.raises(ValueError, match="namespace must be"):
        await cache.flush("")


async def test_an_instance_that_was_away_during_a_flush_applies_it_to_its_l3_at_start(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one = make_cache(l2_url=redis_server.url, instance_id="one")
    two = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "two"), instance_id="two")
    await one.start()
    await two.start()
    await _filled(two)
    await two.stop()  # its L3 keeps both namespaces
    await one.flush("a")
    await one.namespace("b").set("x", 11)

    again = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "two"), instance_id="two-again")
    await again.start()
    assert await _l3_record(again, "a:x") is None  # the logged flush is newer than its L3
    assert await again.namespace("a").get("x") is None
    assert await again.namespace("b").get("y") == 20
    await again.namespace("a").set("z", "after")
    await again.stop()

    third = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "two"), instance_id="two-third")
    await third.start()
    assert await _l3_record(third, "a:z") is not None  # written after the flush: kept


async def test_a_missed_flush_message_is_caught_up_after_a_subscription_gap(
    redis_server: RedisServer, make_cache: CacheFactory, tmp_path: Path
) -> None:
    one = make_cache(l2_url=redis_server.url, instance_id="one")
    two = make_cache(l2_url=redis_server.url, l3_path=str(tmp_path / "two"), instance_id="two")
    await one.start()
    await two.start()
    await _filled(two)
    assert two._subscriber is not None
    two._subscriber._on_flush = None  # as if the message never arrived
    subscriber = two._subscriber
    before = subscriber.received
    await one.flush("a")
    await wait_until(lambda: subscriber.received > before, what="the (ignored) message")
    assert await _l3_record(two, "a:x") is not None
    two._on_invalidation_gap()  # what a resubscription does
    await wait_until(lambda: "a" in two._flushes_seen, what="the flush to be caught up")
    assert await _l3_record(two, "a:x") is None
    assert await _l3_record(two, "b:x") is not None
