"""Cacheable task types: an identical (type, payload) task of the same tenant reuses a stored result.

Every behaviour runs against a real `hulk.cache.Cache` (L1 + L3, no Redis) and against a small
in-memory implementation of the engine's `CacheLike` protocol whose time is driven by a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import CacheFactory

from hulk.engine import BreakerPolicy, CacheLike, CacheNamespaceLike, EngineConfig, Hulk, Registry, Task, TaskStatus
from hulk.keys import canonical_payload, result_key
from hulk.testing import FakeClock

_MISS: Any = object()


class FakeNamespace:
    """One namespace of `FakeCache`."""

    def __init__(self, cache: FakeCache, name: str) -> None:
        self.cache = cache
        self.name = name

    async def get(self, key: str, default: Any = None) -> Any:
        self.cache.gets.append((self.name, key))
        if self.cache.fail:
            raise ConnectionError("cache down")
        entry = self.cache.entries.get((self.name, key))
        if entry is None or entry[1] <= self.cache.clock.time():
            return default
        return entry[0]

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.cache.sets.append((self.name, key, value, ttl))
        if self.cache.fail:
            raise ConnectionError("cache down")
        expires = math.inf if ttl is None else self.cache.clock.time() + ttl
        self.cache.entries[(self.name, key)] = (value, expires)


class FakeCache:
    """A dict behind the `CacheLike` protocol, expiring entries on a fake clock; records its calls."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.entries: dict[tuple[str, str], tuple[Any, float]] = {}
        self.gets: list[tuple[str, str]] = []
        self.sets: list[tuple[str, str, Any, float | None]] = []
        self.fail = False

    def namespace(self, name: str) -> FakeNamespace:
        if ":" in name:
            raise ValueError(f"bad namespace {name!r}")
        return FakeNamespace(self, name)


@dataclass
class Backend:
    """A cache for the engine, the TTL its cacheable type uses and how to let an entry expire."""

    kind: str
    cache: CacheLike
    ttl: float
    expire: Callable[[CacheNamespaceLike, str], Awaitable[None]]


@pytest.fixture(params=["fake", "real"])
async def backend(request: pytest.FixtureRequest, make_cache: CacheFactory, tmp_path: Path) -> Backend:
    if request.param == "fake":
        clock = FakeClock()
        fake = FakeCache(clock)

        async def advance(space: CacheNamespaceLike, key: str) -> None:
            clock.advance(61.0)
            assert await space.get(key, _MISS) is _MISS

        return Backend("fake", fake, 60.0, advance)
    real = make_cache(l3_path=str(tmp_path / "l3"))
    await real.start()

    async def run_out(space: CacheNamespaceLike, key: str) -> None:
        # The native L1 keeps real time: wait (bounded) for the entry's short TTL to run out.
        for _ in range(2000):
            if await space.get(key, _MISS) is _MISS:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{key} did not expire")

    return Backend("real", real, 0.05, run_out)


@dataclass
class Setup:
    app: Hulk
    calls: list[Any]


@pytest.fixture
async def setup(backend: Backend) -> AsyncIterator[Setup]:
    app = Hulk(EngineConfig(workers=2, tick_interval=None, seed=0), builtins=False, cache=backend.cache)
    calls: list[Any] = []

    @app.task("square", cache_ttl=backend.ttl)
    async def square(payload: Any) -> Any:
        calls.append(payload)
        if payload.get("fail"):
            raise RuntimeError("no")
        return {"square": payload["n"] ** 2}

    @app.task("sync.square", cache_ttl=backend.ttl)
    def sync_square(payload: Any) -> Any:
        calls.append(payload)
        return payload["n"] ** 2

    @app.task("nothing", cache_ttl=backend.ttl)
    async def nothing(payload: Any) -> Any:
        calls.append(payload)
        return None

    @app.task("plain")
    async def plain(payload: Any) -> Any:
        calls.append(payload)
        return payload

    @app.task("not.json", cache_ttl=backend.ttl, retries=0)
    async def not_json(payload: Any) -> Any:
        calls.append(payload)
        return {"s": {1, 2}}

    async with app:
        yield Setup(app, calls)


async def run(app: Hulk, type: str, payload: Any, **options: Any) -> Task:
    task = app.submit(type, payload, retries=0, **options)
    return await app.wait(task.id, timeout=10)


async def test_an_identical_task_is_served_from_the_cache(setup: Setup) -> None:
    app = setup.app
    first = await run(app, "square", {"n": 3, "tag": "x"})
    # Same payload, keys in another order: the canonical bytes, and so the key, are the same.
    second = await run(app, "square", {"tag": "x", "n": 3})
    assert setup.calls == [{"n": 3, "tag": "x"}]
    assert first.status is TaskStatus.SUCCEEDED
    assert not first.cached
    assert second.status is TaskStatus.SUCCEEDED
    assert second.cached
    assert second.result == first.result == {"square": 9}
    assert second.to_dict()["cached"] is True
    assert first.to_dict()["cached"] is False
    assert Task.from_dict(second.to_dict()).cached is True
    counters = app.metrics_snapshot()["types"]["square"]
    assert (counters["cache_hits"], counters["succeeded"], counters["started"]) == (1, 2, 2)


async def test_a_different_payload_runs(setup: Setup) -> None:
    first = await run(setup.app, "square", {"n": 3})
    second = await run(setup.app, "square", {"n": 4})
    assert setup.calls == [{"n": 3}, {"n": 4}]
    assert not first.cached
    assert not second.cached
    assert second.result == {"square": 16}


async def test_tenants_do_not_share_results(setup: Setup) -> None:
    a = await run(setup.app, "square", {"n": 5}, tenant="tenant-a")
    b = await run(setup.app, "square", {"n": 5}, tenant="tenant-b")
    assert setup.calls == [{"n": 5}, {"n": 5}]
    assert not a.cached
    assert not b.cached
    again = await run(setup.app, "square", {"n": 5}, tenant="tenant-b")
    assert again.cached
    assert len(setup.calls) == 2


async def test_a_result_expires_after_the_ttl(setup: Setup, backend: Backend) -> None:
    await run(setup.app, "square", {"n": 6})
    assert (await run(setup.app, "square", {"n": 6})).cached
    key = result_key("square", canonical_payload({"n": 6}))
    await backend.expire(backend.cache.namespace("default"), key)
    after = await run(setup.app, "square", {"n": 6})
    assert not after.cached
    assert setup.calls == [{"n": 6}, {"n": 6}]


async def test_failures_are_not_cached(setup: Setup) -> None:
    failed = await run(setup.app, "square", {"n": 1, "fail": True})
    assert failed.status is TaskStatus.DEAD
    assert not failed.cached
    again = await run(setup.app, "square", {"n": 1, "fail": True})
    assert again.status is TaskStatus.DEAD
    assert not again.cached
    assert len(setup.calls) == 2
    bad = await run(setup.app, "not.json", {"n": 1})
    assert bad.status is TaskStatus.DEAD
    assert bad.error is not None
    assert bad.error.type == "PayloadError"
    assert (await run(setup.app, "not.json", {"n": 1})).status is TaskStatus.DEAD
    assert len(setup.calls) == 4
    assert setup.app.metrics_snapshot()["types"]["square"]["cache_hits"] == 0


async def test_sync_handlers_and_none_results_are_cached(setup: Setup) -> None:
    first = await run(setup.app, "sync.square", {"n": 7})
    second = await run(setup.app, "sync.square", {"n": 7})
    assert (first.result, second.result, second.cached) == (49, 49, True)
    assert not (await run(setup.app, "nothing", 1)).cached
    hit = await run(setup.app, "nothing", 1)
    assert hit.cached
    assert hit.result is None
    assert setup.calls == [{"n": 7}, 1]


async def test_the_status_record_and_events_say_cached(setup: Setup) -> None:
    await run(setup.app, "square", {"n": 8})
    hit = await run(setup.app, "square", {"n": 8})
    stored = await setup.app.store.get(hit.id)
    assert stored is not None
    assert stored.cached
    assert stored.to_dict()["cached"] is True


async def test_an_unusable_tenant_name_runs_uncached(setup: Setup) -> None:
    # Neither cache accepts ":" in a namespace name: the task runs, every time.
    for _ in range(2):
        task = await run(setup.app, "square", {"n": 2}, tenant="a:b")
        assert task.status is TaskStatus.SUCCEEDED
        assert not task.cached
    assert len(setup.calls) == 2


async def test_non_cacheable_types_never_touch_the_cache() -> None:
    fake = FakeCache(FakeClock())
    app = Hulk(EngineConfig(workers=1, tick_interval=None, seed=0), builtins=False, cache=fake)

    @app.task("plain")
    async def plain(payload: Any) -> Any:
        return payload

    async with app:
        for _ in range(3):
            assert (await run(app, "plain", {"n": 1})).result == {"n": 1}
    assert fake.gets == []
    assert fake.sets == []
    assert app.pool._types["plain"].mode == 0


async def test_without_a_cache_cacheable_types_just_run() -> None:
    app = Hulk(EngineConfig(workers=1, tick_interval=None, seed=0), builtins=False)
    calls: list[Any] = []

    @app.task("square", cache_ttl=60)
    async def square(payload: Any) -> Any:
        calls.append(payload)
        return payload * payload

    async with app:
        for _ in range(2):
            task = await run(app, "square", 3)
            assert task.result == 9
            assert not task.cached
    assert calls == [3, 3]


async def test_a_failing_cache_is_bypassed() -> None:
    fake = FakeCache(FakeClock())
    fake.fail = True
    app = Hulk(EngineConfig(workers=1, tick_interval=None, seed=0), builtins=False, cache=fake)
    calls: list[Any] = []

    @app.task("square", cache_ttl=60)
    async def square(payload: Any) -> Any:
        calls.append(payload)
        return payload * payload

    async with app:
        for _ in range(2):
            task = await run(app, "square", 3)
            assert task.status is TaskStatus.SUCCEEDED
            assert task.result == 9
            assert not task.cached
    assert calls == [3, 3]
    assert len(fake.gets) == 2
    assert len(fake.sets) == 2
    assert fake.sets[0][3] == 60.0


async def test_a_hit_releases_the_breaker_instead_of_counting_a_call() -> None:
    fake = FakeCache(FakeClock())
    app = Hulk(EngineConfig(workers=1, tick_interval=None, seed=0), builtins=False, cache=fake)

    @app.task("guarded", cache_ttl=60, breaker=BreakerPolicy())
    async def guarded(payload: Any) -> Any:
        return payload

    async with app:
        assert not (await run(app, "guarded", 1)).cached
        assert (await run(app, "guarded", 1)).cached
        assert app.pool.breakers["guarded"].metrics()["calls"] == 1


@pytest.mark.parametrize("ttl", [0, -1.0, math.inf, math.nan, True, "60"])
def test_cache_ttl_must_be_a_positive_finite_number(ttl: Any) -> None:
    registry = Registry()

    async def handler(payload: Any) -> Any:
        return payload

    with pytest.raises(ValueError, match="cache_ttl of 'x'"):
        registry.register(handler, "x", cache_ttl=ttl)
    assert registry.register(handler, "y", cache_ttl=5).cache_ttl == 5.0
    assert registry.register(handler, "z").cache_ttl is None


def test_the_engine_does_not_import_the_cache_package() -> None:
    code = "import sys, hulk.engine, hulk.context; print(sorted(m for m in sys.modules if m.startswith('hulk.cache')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
