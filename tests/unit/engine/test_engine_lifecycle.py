"""Component life cycle: dependency order, reverse stop, deadlines, health."""

from __future__ import annotations

import asyncio

import pytest

from hulk.engine import Component, ComponentFailed, Health, Runtime


class Part:
    """A component that records its calls; it can fail or hang on start or stop."""

    def __init__(self, name: str, log: list[str], *, fail: str = "", hang: str = "") -> None:
        self._name = name
        self.log = log
        self.fail = fail
        self.hang = hang
        self.running = False

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        if self.hang == "start":
            await asyncio.Event().wait()
        if self.fail == "start":
            raise RuntimeError("cannot start")
        self.log.append(f"start {self._name}")
        self.running = True

    def ready(self) -> bool:
        return self.running

    async def stop(self, timeout: float) -> object:
        self.log.append(f"stop {self._name}")
        if self.hang == "stop":
            await asyncio.Event().wait()
        if self.fail == "stop":
            raise RuntimeError("cannot stop")
        self.running = False
        return f"{self._name} stopped"

    def health(self) -> Health:
        if self.fail == "health":
            raise RuntimeError("probe bug")
        return Health("ok", {"name": self._name})


async def test_starts_in_dependency_order_and_stops_in_reverse() -> None:
    log: list[str] = []
    runtime = Runtime()
    runtime.add(Part("http", log), after=["pool", "cache"])
    runtime.add(Part("pool", log), after=["store"])
    runtime.add(Part("cache", log))
    runtime.add(Part("store", log))
    assert runtime.order() == ["cache", "store", "pool", "http"]
    assert isinstance(runtime.get("pool"), Component)
    assert not runtime.ready()
    async with runtime:
        assert runtime.ready()
        assert all(h.status == "ok" for h in runtime.health().values())
    assert log == [
        "start cache",
        "start store",
        "start pool",
        "start http",
        "stop http",
        "stop pool",
        "stop store",
        "stop cache",
    ]
    assert {h.status for h in runtime.health().values()} == {"stopped"}


async def test_failed_start_stops_what_started() -> None:
    log: list[str] = []
    runtime = Runtime()
    runtime.add(Part("a", log))
    runtime.add(Part("b", log, fail="start"), after=["a"])
    with pytest.raises(ComponentFailed, match="'b'") as info:
        await runtime.start()
    assert info.value.component == "b"
    assert log == ["start a", "stop a"]
    assert runtime.health()["b"].status == "failing"


async def test_start_deadline() -> None:
    runtime = Runtime(start_timeout=0.01)
    runtime.add(Part("slow", [], hang="start"))
    with pytest.raises(ComponentFailed, match="did not start within"):
        await runtime.start()


async def test_stop_deadline_and_errors_do_not_stop_the_others() -> None:
    log: list[str] = []
    runtime = Runtime(stop_grace=0.0)
    runtime.add(Part("a", log))
    runtime.add(Part("b", log, hang="stop"), after=["a"], stop_timeout=0.01)
    runtime.add(Part("c", log, fail="stop"), after=["b"])
    await runtime.start()
    results = await runtime.stop()
    assert results == {"c": None, "b": None, "a": "a stopped"}
    health = runtime.health()
    assert health["b"].status == "failing"
    assert "did not stop within" in health["b"].detail["error"]
    assert health["c"].status == "failing"
    assert "cannot stop" in health["c"].detail["error"]


async def test_stop_timeout_override() -> None:
    runtime = Runtime(stop_grace=0.0)
    runtime.add(Part("b", [], hang="stop"), stop_timeout=100.0)
    await runtime.start()
    assert await runtime.stop(timeout=0.01) == {"b": None}


async def test_bad_graphs() -> None:
    runtime = Runtime()
    runtime.add(Part("a", []), after=["ghost"])
    with pytest.raises(ValueError, match="unknown component 'ghost'"):
        runtime.order()
    loop = Runtime()
    loop.add(Part("a", []), after=["b"])
    loop.add(Part("b", []), after=["a"])
    with pytest.raises(ValueError, match="cycle"):
        loop.order()
    with pytest.raises(ValueError, match="already"):
        loop.add(Part("a", []))


async def test_health_states() -> None:
    runtime = Runtime()
    runtime.add(Part("p", [], fail="health"))
    assert runtime.health()["p"].status == "starting"
    await runtime.start()
    health = runtime.health()["p"]
    assert health.status == "failing"
    assert not health.ok
    await runtime.start()  # starting twice is harmless
    await runtime.stop()
