"""`hulk.context`: the running task and its tenant's cache, in async, sync and child-task code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import CacheFactory

from hulk import context
from hulk.cache import Cache
from hulk.engine import BreakerPolicy, EngineConfig, Hulk, Task, TaskStatus


@pytest.fixture
async def cache(make_cache: CacheFactory) -> Cache:
    made = make_cache()
    await made.start()
    return made


def make_app(cache: Cache | None) -> Hulk:
    app = Hulk(EngineConfig(workers=2, tick_interval=None, seed=0), builtins=False, cache=cache)

    @app.task("async.ctx")
    async def async_ctx(payload: Any, task: Task) -> Any:
        current = context.current_task()
        space = context.cache()
        seen: dict[str, Any] = {"same": current is task, "id": current.id, "tenant": current.tenant}
        if space is not None:
            await space.set("seen", payload, 60)
            seen["cached"] = await space.get("seen")

        async def child() -> str:
            return context.current_task().id

        seen["child"] = await asyncio.create_task(child())
        return seen

    @app.task("sync.ctx")
    def sync_ctx(payload: Any, task: Task) -> Any:
        current = context.current_task()
        return {"same": current is task, "id": current.id, "has_cache": context.cache() is not None}

    return app


@pytest.fixture
async def app(cache: Cache) -> AsyncIterator[Hulk]:
    async with make_app(cache) as running:
        yield running


async def result_of(app: Hulk, type: str, payload: Any, tenant: str = "default") -> tuple[Task, Any]:
    task = app.submit(type, payload, tenant=tenant)
    done = await app.wait(task.id, timeout=10)
    assert done.status is TaskStatus.SUCCEEDED, done.error
    return done, done.result


def test_outside_a_handler_there_is_no_context() -> None:
    with pytest.raises(LookupError, match="no hulk task"):
        context.current_task()
    with pytest.raises(LookupError, match="no hulk task"):
        context.cache()


async def test_async_handlers_see_their_task_and_tenant_cache(app: Hulk, cache: Cache) -> None:
    done, seen = await result_of(app, "async.ctx", {"v": 1}, tenant="tenant-a")
    assert seen == {"same": True, "id": done.id, "tenant": "tenant-a", "cached": {"v": 1}, "child": done.id}
    # The handler wrote into its tenant's namespace only.
    assert await cache.namespace("tenant-a").get("seen") == {"v": 1}
    assert await cache.namespace("tenant-b").get("seen") is None
    other, seen_b = await result_of(app, "async.ctx", {"v": 2}, tenant="tenant-b")
    assert seen_b["id"] == other.id != done.id
    assert await cache.namespace("tenant-a").get("seen") == {"v": 1}


async def test_sync_handlers_see_their_task_in_the_thread(app: Hulk) -> None:
    first, seen = await result_of(app, "sync.ctx", None)
    assert seen == {"same": True, "id": first.id, "has_cache": True}
    second, seen = await result_of(app, "sync.ctx", None)
    assert seen["id"] == second.id != first.id


async def test_without_a_runtime_cache_the_context_cache_is_none() -> None:
    async with make_app(None) as app:
        done, seen = await result_of(app, "async.ctx", 1)
        assert seen == {"same": True, "id": done.id, "tenant": "default", "child": done.id}
        _, sync_seen = await result_of(app, "sync.ctx", 1)
        assert sync_seen["has_cache"] is False


async def test_every_attempt_sees_its_own_task_and_the_callers_context_is_untouched() -> None:
    # The task is set before each attempt (natively for plain ones, by the Python loop for the
    # others) and never reset: the next attempt sets it again, the caller's context never sees it.
    var = context.current_task_var
    app = make_app(None)
    seen: list[str] = []

    @app.task("boom")
    async def boom(payload: Any) -> Any:
        seen.append(context.current_task().id)
        raise RuntimeError("boom")

    async with app:
        done, async_seen = await result_of(app, "async.ctx", 1)
        assert async_seen["id"] == done.id
        done, sync_seen = await result_of(app, "sync.ctx", 1)
        assert sync_seen["id"] == done.id
        failing = app.submit("boom", retries=0)
        assert (await app.wait(failing.id, timeout=10)).status is TaskStatus.DEAD
    assert seen == [failing.id]
    assert var.get() is None


async def test_a_task_refused_by_its_breaker_runs_no_hook_in_an_earlier_task_context() -> None:
    app = make_app(None)
    seen: list[str] = []
    gate = asyncio.Event()

    @app.task("guarded", breaker=BreakerPolicy(fail_fast=True))
    async def guarded(payload: Any) -> Any:
        return payload

    @app.on_dead
    def hook(task: Task) -> None:
        try:
            seen.append(context.current_task().id)
        except LookupError:
            seen.append("none")
        gate.set()

    async with app:
        await result_of(app, "guarded", 1)  # a first attempt ran in this worker
        app.pool.breakers["guarded"].force_open()
        refused = app.submit("guarded", 2)
        await asyncio.wait_for(gate.wait(), 10)
        assert (await app.wait(refused.id, timeout=10)).status is TaskStatus.DEAD
    assert seen == ["none"]
