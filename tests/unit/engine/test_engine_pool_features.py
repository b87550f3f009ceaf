# The tests read task.status again after awaits that change it; mypy would keep the earlier narrowing.
# mypy: disable-error-code="comparison-overlap"
"""External delivery, auto-scaling, metrics, health and the process pool."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hulk.engine import BackoffPolicy, BreakerPolicy, EngineConfig, Hulk, Task, TaskStatus
from hulk.engine.builtins import cpu
from hulk.testing import InMemoryRuntime


class Boom(Exception):
    """A handler's failure."""


class FakeDelivery:
    """Records how the pool settles a delivered task (a broker message in service mode)."""

    def __init__(self) -> None:
        self.retries: list[float] = []
        self.terminal: list[str] = []

    def on_retry(self, task: Task, delay: float) -> None:
        self.retries.append(delay)

    def on_terminal(self, task: Task) -> None:
        self.terminal.append(str(task.status))


class BrokenDelivery:
    def on_retry(self, task: Task, delay: float) -> None:
        raise RuntimeError("nak failed")

    def on_terminal(self, task: Task) -> None:
        raise RuntimeError("ack failed")


def make_app() -> tuple[Hulk, asyncio.Event]:
    app = Hulk(EngineConfig(workers=2, tick_interval=None, seed=0))
    gate = asyncio.Event()

    @app.task("ok")
    async def ok(payload: Any) -> Any:
        return payload

    @app.task("boom", retries=2, backoff=BackoffPolicy(base=3.0, jitter="none"))
    async def boom(payload: Any) -> Any:
        raise Boom("boom")

    @app.task("block", timeout=100.0)
    async def block(payload: Any) -> Any:
        await gate.wait()
        return payload

    @app.task(
        "guarded", retries=0, breaker=BreakerPolicy(minimum_calls=1, window_size=1, wait_open=60.0, half_open_calls=1)
    )
    async def guarded(payload: Any) -> Any:
        if payload:
            raise Boom("down")
        return "up"

    return app, gate


async def test_delivery_success_is_acked() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app) as rt:
        delivery = FakeDelivery()
        task = rt.app.submit_task(Task("ok", 5, id="msg-1"), delivery)
        await rt.settle()
        assert task.status is TaskStatus.SUCCEEDED
        assert delivery.terminal == ["succeeded"]


async def test_delivery_retry_is_a_nak_with_the_backoff_delay() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app) as rt:
        delivery = FakeDelivery()
        task = rt.app.submit_task(Task("boom", None, id="msg-2"), delivery)
        await rt.settle()
        assert task.status is TaskStatus.RETRYING
        assert delivery.retries == [3.0]
        assert rt.pool.get(task.id) is None  # the broker owns it until redelivery
        assert rt.pool.scheduled == 0  # the local scheduler is not used
        # Redelivery: the message comes back as the same task, one attempt further.
        rt.app.submit_task(task, delivery)
        await rt.settle()
        rt.app.submit_task(task, delivery)
        await rt.settle()
        assert task.status is TaskStatus.DEAD
        assert task.attempt == 3
        assert delivery.retries == [3.0, 6.0]
        assert delivery.terminal == ["dead"]


async def test_delivery_breaker_open_is_a_nak() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app) as rt:
        rt.submit("guarded", True)
        await rt.settle()
        delivery = FakeDelivery()
        task = rt.app.submit_task(Task("guarded", False), delivery)
        await rt.settle()
        assert task.status is TaskStatus.SCHEDULED
        assert delivery.retries == [pytest.approx(60.0)]
        assert rt.pool.get(task.id) is None


async def test_delivery_cancel_is_terminal() -> None:
    app, gate = make_app()
    async with InMemoryRuntime(app, workers=1) as rt:
        rt.submit("block", 1)
        await rt.settle()
        delivery = FakeDelivery()
        task = rt.app.submit_task(Task("ok", 1), delivery)
        assert rt.app.cancel(task.id)
        assert delivery.terminal == ["cancelled"]
        gate.set()


async def test_broken_delivery_does_not_break_the_pool() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app) as rt:
        ok = rt.app.submit_task(Task("ok", 1), BrokenDelivery())
        failing = rt.app.submit_task(Task("boom", 1), BrokenDelivery())
        await rt.settle()
        assert ok.status is TaskStatus.SUCCEEDED
        assert failing.status is TaskStatus.RETRYING
        assert rt.submit("ok", 2).status is TaskStatus.QUEUED


async def test_free_slots_and_running_deliveries() -> None:
    app, gate = make_app()
    async with InMemoryRuntime(app, workers=3) as rt:
        assert rt.pool.free_slots() == 3
        delivery = FakeDelivery()
        rt.app.submit_task(Task("block", 1), delivery)
        rt.submit("block", 2)
        await rt.settle()
        assert rt.pool.free_slots() == 1
        assert rt.pool.running_deliveries() == [delivery]
        rt.submit("block", 3)
        rt.submit("ok", 4)
        assert rt.pool.free_slots() == 0
        gate.set()
        await rt.settle()
        assert rt.pool.free_slots() == 3


async def test_drain_returns_deliveries_of_not_started_tasks() -> None:
    app, _gate = make_app()
    rt = InMemoryRuntime(app, workers=1)
    await rt.app.start()
    rt.submit("block", 1)
    await rt.settle()
    delivery = FakeDelivery()
    task = rt.app.submit_task(Task("ok", 1), delivery)
    result = await rt.app.stop(0.0)
    assert (task, delivery) in result.not_started
    assert delivery.terminal == []


async def test_autoscale_grows_with_backlog_and_shrinks_when_idle() -> None:
    app, gate = make_app()
    async with InMemoryRuntime(app, workers=1, min_workers=1, max_workers=3, autoscale_interval=1.0) as rt:
        tasks = [rt.submit("block", n) for n in range(3)]
        await rt.settle()
        assert rt.pool.worker_count == 1
        assert rt.pool.busy == 1
        await rt.advance(1.0)
        assert rt.pool.worker_count == 2
        assert rt.pool.busy == 2
        await rt.advance(1.0)
        assert rt.pool.worker_count == 3
        assert rt.pool.busy == 3
        await rt.advance(1.0)
        assert rt.pool.worker_count == 3  # the maximum
        gate.set()
        await rt.settle()
        assert all(t.status is TaskStatus.SUCCEEDED for t in tasks)
        for expected in (2, 1, 1):
            await rt.advance(1.0)
            assert rt.pool.worker_count == expected
        snap = rt.app.metrics_snapshot()
        assert (snap["scale_ups"], snap["scale_downs"]) == (2, 2)
        assert (snap["workers"], snap["workers_min"], snap["workers_max"]) == (1, 1, 3)
        assert rt.submit("ok", 1).status is TaskStatus.QUEUED
        await rt.settle()


async def test_autoscale_grows_on_latency() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app, workers=1, max_workers=2, scale_up_latency=0.5) as rt:
        rt.submit("ok", 1)
        rt.clock.advance(1.0)  # the task waits a (fake) second in the queue
        await rt.settle()
        await rt.advance(0.0)
        assert rt.pool.worker_count == 2


async def test_metrics_snapshot_shape() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app) as rt:
        rt.submit("ok", 1)
        rt.submit("guarded", True)
        await rt.settle()
        snap = rt.app.metrics_snapshot()
        assert snap["types"]["ok"]["succeeded"] == 1
        assert snap["types"]["guarded"]["dead"] == 1
        assert snap["latency"]["count"] == 2
        assert snap["queue"]["pushed"] == 2
        assert snap["breakers"]["guarded"]["state"] in ("open", "closed", "half_open")
        assert {"workers", "busy", "queued", "capacity", "scheduled", "rejected"} <= set(snap)


async def test_health_reports_breakers_stuck_open() -> None:
    app, _gate = make_app()
    async with InMemoryRuntime(app, breaker_stuck_after=5.0) as rt:
        assert rt.app.health()["pool"].status == "ok"
        assert rt.app.ready()
        rt.submit("guarded", True)
        await rt.settle()
        await rt.advance(1.0)
        assert rt.app.health()["pool"].status == "ok"
        await rt.advance(5.0)
        health = rt.app.health()["pool"]
        assert health.status == "degraded"
        assert health.ok
        assert health.detail["stuck_breakers"] == ["guarded"]
        await rt.advance(60.0)  # half-open: no longer open, but not closed either
        assert rt.pool.stuck_breakers() == ["guarded"]
        rt.submit("guarded", False)
        await rt.settle()
        await rt.advance(1.0)
        assert rt.pool.stuck_breakers() == []


async def test_process_pool_handler() -> None:
    app = Hulk(EngineConfig(workers=2, tick_interval=None, process_workers=1))
    app.registry.register(cpu, "cpu.process", executor="process")
    async with InMemoryRuntime(app) as rt:
        assert isinstance(await rt.app.call("cpu.process", {"us": 10}, timeout=60), int)


async def test_real_timer_drives_timeouts() -> None:
    """With the default timer (real time), a short timeout fires without any manual tick."""
    app = Hulk(EngineConfig(workers=1, tick_interval=0.005, seed=0))
    never = asyncio.Event()

    @app.task("stuck", timeout=0.01, retries=0)
    async def stuck(payload: Any) -> Any:
        await never.wait()

    async with app:
        task = app.submit("stuck")
        done = await app.wait(task.id, timeout=10)
        assert done.status is TaskStatus.DEAD
        assert done.timed_out
