"""`Cache.flush` without Redis: L1 and L3 of one namespace, or all, and the L1 key index's bound."""

import asyncio
from pathlib import Path

import pytest

from hulk.cache import Cache


async def test_flush_without_redis_empties_one_namespace_in_l1_and_l3(tmp_path: Path) -> None:
    cache = Cache(l3_path=str(tmp_path / "l3"))
    await cache.start()
    try:
        await cache.namespace("a").set_many({"x": 1, "y": 2})
        await cache.namespace("ab").set("x", 3)  # a namespace whose name starts like "a"
        await cache.set("x", 4)
        assert await cache.flush("a") == 4  # two entries in L1, two in L3
        assert await cache.namespace("a").get_many(["x", "y"]) == {}
        assert await cache.namespace("ab").get("x") == 3
        assert await cache.get("x") == 4
        await cache.snapshot()
        cache._l1.clear()
        assert await cache.namespace("ab").get("x") == 3  # from L3, after the range delete
        assert await cache.namespace("a").get("x") is None
    finally:
        await cache.stop()


async def test_flush_of_everything_without_any_lower_level() -> None:
    cache = Cache()
    await cache.start()
    try:
        await cache.namespace("a").set("x", 1)
        await cache.set("y", 2)
        assert await cache.flush() == 2
        assert len(cache._l1) == 0
        assert await cache.flush() == 0
        assert await cache.get_or_compute("y", lambda: 5) == 5
    finally:
        await cache.stop()


async def test_flush_refuses_a_bad_namespace_before_touching_anything() -> None:
    cache = Cache()
    await cache.start()
    try:
        await cache.set("x", 1)
        with pytest.raises(ValueError, match=r"namespace must be 1-128 characters of \[A-Za-z0-9_.-\], got 'a b'"):
            await cache.flush("a b")
        assert await cache.get("x") == 1
    finally:
        await cache.stop()


async def test_the_l1_key_index_is_pruned_to_what_l1_holds() -> None:
    cache = Cache(l1_size=10)
    await cache.start()
    try:
        for i in range(cache._l1_index_limit + 1):
            await cache.set(f"k{i}", i)
        # The prune ran: the index holds no more than L1 (plus what was added since).
        assert len(cache._l1_keys) <= len(cache._l1) + 1
        assert await cache.flush("default") == len(cache._l1_keys) or len(cache._l1) == 0
        assert len(cache._l1) == 0
    finally:
        await cache.stop()


async def test_a_flush_received_from_another_instance_drops_the_namespace_here() -> None:
    cache = Cache()
    await cache.start()
    try:
        await cache.namespace("a").set("x", 1)
        await cache.namespace("b").set("x", 2)
        cache._on_flushed("a")
        assert await cache.namespace("a").get("x") is None
        assert await cache.namespace("b").get("x") == 2
        assert cache.metrics_snapshot()["invalidations"]["received"] == 1
        cache._on_flushed(None)
        assert await cache.namespace("b").get("x") is None
    finally:
        await cache.stop()


async def test_a_read_in_flight_during_a_flush_does_not_put_its_value_back(tmp_path: Path) -> None:
    cache = Cache(l3_path=str(tmp_path / "l3"))
    await cache.start()
    try:
        await cache.namespace("a").set("x", 1)
        cache._l1.clear()
        l3 = cache._l3
        assert l3 is not None
        real_get_many = l3.get_many
        reading, release = asyncio.Event(), asyncio.Event()

        async def slow_get_many(keys: list[bytes]) -> dict[bytes, bytes]:
            found = await real_get_many(keys)  # read before the flush...
            reading.set()
            await release.wait()  # ...and returned after it
            return found

        l3.get_many = slow_get_many  # type: ignore[method-assign]
        read = asyncio.create_task(cache.namespace("a").get("x"))
        await reading.wait()
        await cache.flush("a")
        release.set()
        assert await read == 1  # the caller gets what it read
        assert "a:x" not in cache._l1  # but the flushed value is not cached again
        l3.get_many = real_get_many  # type: ignore[method-assign]
        assert await cache.namespace("a").get("x") is None
    finally:
        await cache.stop()
