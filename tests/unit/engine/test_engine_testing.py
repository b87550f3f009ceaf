"""hulk.testing and the built-in handlers."""

from __future__ import annotations

import pytest

from hulk.engine import Clock, EngineConfig, Hulk, PayloadError, Task, TaskStatus
from hulk.engine.builtins import cpu, echo, fail, sleep
from hulk.testing import FakeClock, InMemoryRuntime


def test_fake_clock() -> None:
    clock = FakeClock(start=10.0, wall=1000.0)
    assert isinstance(clock, Clock)
    assert clock.monotonic() == 10.0
    assert clock.time() == 1000.0
    clock.advance(2.5)
    assert clock.monotonic() == 12.5
    assert clock.monotonic() + clock.wall_offset() == 1002.5
    with pytest.raises(ValueError, match="advance"):
        clock.advance(-1)


async def test_in_memory_runtime_defaults() -> None:
    async with InMemoryRuntime(queue_size=5) as rt:
        assert rt.config.tick_interval is None
        assert rt.config.queue_size == 5
        task = rt.submit("echo", {"x": 1})
        await rt.settle()
        assert rt.history(task.id) == ["queued", "running", "succeeded"]
        assert rt.get(task.id) is task
        assert (await rt.wait(task.id)).result == {"x": 1}
        assert task.created_at == rt.clock.time()
    assert rt.drained is not None
    assert rt.drained.finished_in_time


async def test_settle_gives_up_on_endless_work() -> None:
    app = Hulk(EngineConfig(workers=1, tick_interval=None), builtins=False)
    runtimes: list[InMemoryRuntime] = []

    @app.task("again", retries=0)
    async def again(payload: int) -> None:
        if payload < 10_000:
            runtimes[0].submit("again", payload + 1)

    async with InMemoryRuntime(app) as rt:
        runtimes.append(rt)
        rt.submit("again", 0)
        with pytest.raises(RuntimeError, match="did not settle"):
            await rt.settle(max_turns=20)


async def test_builtins() -> None:
    assert await echo({"a": 1}) == {"a": 1}
    await sleep({"ms": 0})
    await sleep(None)
    await fail({"probability": 0.0})
    with pytest.raises(Exception, match="on purpose"):
        await fail(None)
    with pytest.raises(PayloadError, match="'ms' must be a number"):
        await sleep({"ms": "x"})
    with pytest.raises(PayloadError, match="must be an object"):
        await sleep([1])
    assert cpu({"us": 50}) >= 0


async def test_builtins_through_the_engine() -> None:
    async with InMemoryRuntime() as rt:
        done = [rt.submit("echo", 1), rt.submit("sleep", {"ms": 0}), rt.submit("fail", {"probability": 0})]
        cpu_task = rt.submit("cpu", {"us": 10})
        for task in done:
            assert (await rt.wait(task.id)).status is TaskStatus.SUCCEEDED
        assert (await rt.wait(cpu_task.id)).status is TaskStatus.SUCCEEDED


def test_engine_names_from_the_package() -> None:
    import hulk

    assert hulk.Hulk is Hulk
    assert hulk.EngineConfig is EngineConfig
    with pytest.raises(AttributeError, match="nope"):
        hulk.nope  # noqa: B018


async def test_tasks_submitted_before_start_run_after_it() -> None:
    app = Hulk(EngineConfig(workers=1, tick_interval=None))
    task = app.submit("echo", 5)
    assert task.status is TaskStatus.QUEUED
    async with app:
        assert (await app.wait(task.id, timeout=10)).result == 5


def test_run_uses_uvloop() -> None:
    from hulk.engine import run

    async def main() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__

    assert run(main()).startswith("uvloop")


async def test_a_subclass_can_override_submit() -> None:
    seen: list[str] = []

    class Audited(Hulk):
        def submit(self, type: str, payload: object = None, **options: object) -> Task:
            seen.append(type)
            return super().submit(type, payload)

    app = Audited(EngineConfig(workers=1, tick_interval=None))
    async with app:
        task = app.submit("echo", 1)
        assert (await app.wait(task.id, timeout=10)).result == 1
    assert seen == ["echo"]
    plain = Hulk(EngineConfig(workers=1, tick_interval=None))
    assert plain.submit == plain.pool.submit_payload
