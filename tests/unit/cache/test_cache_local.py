"""The cache without Redis: L1 + L3, the API, validation, health and metrics."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hulk.cache import Cache
from tests.conftest import CacheFactory


async def test_api_round_trip_on_l1_only(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.start()
    assert cache.ready()
    assert cache.mode == "l1"
    await cache.set("a", {"x": [1, 2]})
    await cache.set("raw", b"\x00bytes")
    assert await cache.get("a") == {"x": [1, 2]}
    assert await cache.get("raw") == b"\x00bytes"
    assert await cache.get("missing") is None
    assert await cache.get("missing", "dflt") == "dflt"
    await cache.set_many({"b": 1, "c": None})
    await cache.set_many([("d", (1, 2))])
    assert await cache.get_many(["a", "b", "c", "d", "zz"]) == {"a": {"x": [1, 2]}, "b": 1, "c": None, "d": [1, 2]}
    await cache.delete("a")
    await cache.delete_many(["b", "c"])
    assert await cache.get_many(["a", "b", "c", "d"]) == {"d": [1, 2]}


async def test_get_or_compute_accepts_sync_and_async_functions(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.start()
    calls: list[str] = []

    def sync_fn() -> dict[str, int]:
        calls.append("sync")
        return {"v": 1}

    async def async_fn() -> tuple[int, int]:
        calls.append("async")
        return (1, 2)

    assert await cache.get_or_compute("s", sync_fn) == {"v": 1}
    assert await cache.get_or_compute("s", sync_fn) == {"v": 1}
    computed: Any = await cache.get_or_compute("a", async_fn, ttl=30)
    assert computed == [1, 2]  # orjson turns the tuple into a list
    cached: Any = await cache.get_or_compute("a", async_fn)
    assert cached == [1, 2]
    assert calls == ["sync", "async"]
    snap = cache.metrics_snapshot()
    assert snap["computes"] == 2
    assert snap["requests"]["l1"] == {"hit": 2, "miss": 2}


async def test_a_failing_compute_stores_nothing_and_raises(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.start()

    async def boom() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await cache.get_or_compute("k", boom)
    assert await cache.get("k", "absent") == "absent"
    assert cache.metrics_snapshot()["compute_errors"] == 1


async def test_single_flight_under_100_concurrent_misses(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l3_path=str(tmp_path / "l3"))
    await cache.start()
    release = asyncio.Event()
    runs = 0

    async def compute() -> dict[str, int]:
        nonlocal runs
        runs += 1
        await release.wait()
        return {"n": runs}

    calls = [asyncio.create_task(cache.get_or_compute("hot", compute)) for _ in range(100)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*calls) == [{"n": 1}] * 100
    assert runs == 1
    assert cache.metrics_snapshot()["singleflight_joined"] == 99


async def test_namespaces_isolate_tenants(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l3_path=str(tmp_path / "l3"))
    await cache.start()
    a, b = cache.namespace("tenant-a"), cache.namespace("tenant-b")
    assert cache.namespace("tenant-a") is a
    assert a.namespace_name == "tenant-a"
    assert cache.name == "cache"
    await a.set("k", "secret-a")
    assert await b.get("k") is None
    assert await cache.get("k") is None
    assert await b.get_many(["k"]) == {}
    assert await b.get_or_compute("k", lambda: "b's own") == "b's own"
    assert await a.get("k") == "secret-a"
    await b.delete("k")
    assert await a.get("k") == "secret-a"
    with pytest.raises(ValueError, match="namespace"):
        cache.namespace("a:b")


async def test_ttl_expires_l1_entries(make_cache: CacheFactory) -> None:
    cache = make_cache(l1_ttl=0.05)
    await cache.start()
    await cache.set("short", 1, ttl=60)
    await cache.set("shorter", 2, ttl=0.05)
    await asyncio.sleep(0.1)  # the TTL has to run out: real time, not synchronisation
    assert await cache.get("short") is None
    assert await cache.get("shorter") is None


async def test_ttl_expires_l3_entries(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l3_path=str(tmp_path / "l3"), l1_size=1)
    await cache.start()
    await cache.set("k", "v", ttl=0.05)
    await cache.set("other", "evicts k from L1")
    await cache.snapshot()
    await asyncio.sleep(0.1)  # the TTL has to run out: real time, not synchronisation
    assert await cache.get("k") is None
    snap = cache.metrics_snapshot()
    assert snap["requests"]["l3"]["hit"] == 0


async def test_l3_serves_what_l1_evicted(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l3_path=str(tmp_path / "l3"), l1_size=1)
    await cache.start()
    assert cache.mode == "l1+l3"
    await cache.set("a", 1)
    await cache.set("b", 2)
    await cache.snapshot()
    assert await cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    snap = cache.metrics_snapshot()
    assert snap["requests"]["l3"]["hit"] >= 1
    assert snap["hit_ratio"]["l3"] == 1.0


async def test_restart_warms_l1_from_l3(make_cache: CacheFactory, tmp_path: Path) -> None:
    path = str(tmp_path / "l3")
    first = make_cache(l3_path=path)
    await first.start()
    await first.namespace("t").set_many({"a": 1, "b": [2]})
    await first.get_or_compute("c", lambda: "computed")
    await first.delete("gone")
    await first.stop()
    assert not first.ready()
    assert first.health()["status"] == "stopped"

    second = make_cache(l3_path=path)
    await second.start()
    snap = second.metrics_snapshot()
    assert snap["l3"]["warmed"] == 3
    assert await second.namespace("t").get_many(["a", "b"]) == {"a": 1, "b": [2]}
    assert await second.get_or_compute("c", lambda: "recomputed") == "computed"
    assert second.metrics_snapshot()["requests"]["l1"]["miss"] == 0


async def test_a_corrupt_l3_is_reported_and_set_aside(make_cache: CacheFactory, tmp_path: Path) -> None:
    path = tmp_path / "l3"
    path.mkdir()
    (path / "CURRENT").write_bytes(b"MANIFEST-424242\n")
    (path / "MANIFEST-424242").write_bytes(b"\xde\xad\xbe\xef" * 64)
    cache = make_cache(l3_path=str(path))
    with capture_logs() as logs:
        await cache.start()
    assert cache.ready()
    health = cache.health()
    assert health["status"] == "ok"
    assert health["l3"]["status"] == "recovered"
    assert len(health["l3"]["set_aside"]) == 1
    assert health["l3"]["error"]
    assert any(entry["event"] == "cache.l3.unreadable" for entry in logs)
    await cache.set("k", 1)
    assert await cache.snapshot() == 1


async def test_an_unusable_l3_path_degrades_without_failing(make_cache: CacheFactory, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = make_cache(l3_path=str(blocker / "l3"))
    await cache.start()
    health = cache.health()
    assert health["status"] == "degraded"
    assert health["reasons"] == ["l3 unavailable"]
    assert health["mode"] == "l1"
    await cache.set("k", 1)
    assert await cache.get("k") == 1
    assert await cache.snapshot() == 0


async def test_no_l2_url_is_said_once(make_cache: CacheFactory) -> None:
    cache = make_cache()
    with capture_logs() as logs:
        await cache.start()
        await cache.start()
        for i in range(10):
            await cache.get(f"k{i}")
    assert [entry["event"] for entry in logs].count("cache.l2.disabled") == 1


async def test_snapshots_run_periodically(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l3_path=str(tmp_path / "l3"), snapshot_interval=0.01, l3_max_pending=1)
    await cache.start()
    await cache.set("k", 1)
    for _ in range(500):
        if cache.metrics_snapshot()["l3"]["snapshots"]:
            break
        await asyncio.sleep(0.01)
    assert cache.metrics_snapshot()["l3"]["snapshot_entries"] == 1
    await cache.drain()


async def test_health_and_metrics_shapes(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l1_size=2, l3_path=str(tmp_path / "l3"))
    await cache.start()
    for i in range(5):
        await cache.set(f"k{i}", i)
    for _ in range(200):
        await cache.get("k4")
    health = cache.health()
    assert health["status"] == "ok"
    assert health["l1"]["capacity"] == 2
    assert health["l2"] == {
        "configured": False,
        "up": False,
        "url": None,
        "breaker": None,
        "last_error": None,
        "outages": 0,
        "probes": 0,
        "dirty": 0,
    }
    assert health["invalidation"]["subscribed"] is False
    snap = cache.metrics_snapshot()
    assert snap["evictions"]["l1"] >= 3
    assert snap["l2_breaker"] is None
    assert snap["mode"] == "l1+l3"
    assert snap["sets"] == 5
    assert snap["latency_seconds"]["l1"]["count"] >= 1
    assert set(snap["hit_ratio"]) == {"l1", "l2", "l3"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l1_size": 0}, "l1_size"),
        ({"l1_size": True}, "l1_size"),
        ({"l1_ttl": 0}, "l1_ttl"),
        ({"l1_ttl": None}, "l1_ttl"),
        ({"l2_ttl": -1.0}, "l2_ttl"),
        ({"l2_ttl": float("inf")}, "l2_ttl"),
        ({"snapshot_interval": "1"}, "snapshot_interval"),
        ({"l2_max_connections": 0}, "l2_max_connections"),
        ({"max_dirty": 1.5}, "max_dirty"),
        ({"l2_url": "http://localhost:6379"}, "l2_url"),
        ({"namespace": "a b"}, "namespace"),
    ],
)
def test_bad_parameters_raise_value_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Cache(**kwargs)


def test_a_bad_url_is_reported_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"\*\*\*") as info:
        Cache(l2_url="http://user:hunter2@host:1")
    assert "hunter2" not in str(info.value)


async def test_bad_ttl_and_values_raise(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.start()
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", 1, ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        await cache.get_or_compute("k", lambda: 1, ttl=-2)
    with pytest.raises(TypeError):
        await cache.set("k", object())


async def test_no_expiry_when_l2_ttl_is_none(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l2_ttl=None, l3_path=str(tmp_path / "l3"))
    await cache.start()
    await cache.set("k", 1)
    assert await cache.get("k") == 1


async def test_stop_before_start_and_context_manager(tmp_path: Path) -> None:
    cache = Cache(l3_path=str(tmp_path / "l3"))
    await cache.stop()
    assert cache.health()["status"] == "stopped"
    async with Cache(l3_path=str(tmp_path / "l3b")) as running:
        assert running.ready()
        await running.set("k", 1)
    assert not running.ready()


async def test_metric_sources_for_the_exporter(make_cache: CacheFactory) -> None:
    cache = make_cache(l2_url="")
    await cache.start()
    await cache.get("x")
    requests = cache.metrics.requests()
    assert requests[("l1", "miss")].value == 1
    assert len(requests) == 9
    assert set(cache.metrics.latencies()) == {("l1",), ("l2",), ("l3",), ("compute",)}
    assert cache.breakers() == []
    assert cache.health()["l2"]["configured"] is False


async def test_health_while_starting_and_a_stop_deadline(make_cache: CacheFactory, tmp_path: Path) -> None:
    cache = make_cache(l3_path=str(tmp_path / "l3"))
    assert cache.health()["status"] == "starting"
    assert not cache.ready()
    await cache.start()
    await cache.set("k", 1)
    await cache.stop(timeout=5.0)
    assert cache.health()["status"] == "stopped"
    await cache.stop()
