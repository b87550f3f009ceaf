"""Handler registration: the decorator, options, conflicts and loading modules by import path."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hulk.engine import BackoffPolicy, BreakerPolicy, EngineConfig, Hulk, Registry, Task, UnknownTaskType
from hulk.engine import registry as registry_module


async def coro(payload: Any) -> Any:
    return payload


def plain(payload: Any) -> Any:
    return payload


async def with_task(payload: Any, *, task: Task) -> Any:
    return task.id


def test_decorator_registers_and_returns_the_function() -> None:
    reg = Registry()
    decorated = reg.task("a", timeout=3, retries=1, concurrency=2)(coro)
    assert decorated is coro
    spec = reg.get("a")
    assert (spec.executor, spec.timeout, spec.retries, spec.concurrency, spec.pass_task) == ("loop", 3, 1, 2, False)
    assert "a" in reg
    assert len(reg) == 1
    assert reg.names() == ["a"]
    assert [s.name for s in reg] == ["a"]


def test_executor_is_inferred_and_checked() -> None:
    reg = Registry()
    assert reg.register(plain, "p").executor == "thread"
    assert reg.register(plain, "pp", executor="process").executor == "process"
    assert reg.register(with_task, "t").pass_task is True
    with pytest.raises(ValueError, match="needs a coroutine function"):
        reg.register(plain, "x", executor="loop")
    with pytest.raises(ValueError, match="needs a plain function"):
        reg.register(coro, "y", executor="thread")
    with pytest.raises(ValueError, match="loop, thread or process"):
        reg.register(plain, "z", executor="gpu")  # type: ignore[arg-type]


def test_default_name_is_module_and_qualname() -> None:
    reg = Registry()
    assert reg.register(coro).name == f"{__name__}.coro"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout of 'n' must be"),
        ({"retries": -1}, "retries of 'n' must be"),
        ({"concurrency": 0}, "concurrency of 'n' must be"),
        ({"breaker": 3}, "breaker of 'n' must be"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registry().register(coro, "n", **kwargs)


def test_bad_name_and_handler() -> None:
    with pytest.raises(ValueError, match="callable"):
        Registry().register(42, "n")  # type: ignore[arg-type]


def test_conflicts_are_refused() -> None:
    reg = Registry()
    reg.register(coro, "a")
    reg.register(coro, "a")  # the same function again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register(plain, "a")
    reg.breaker("db", BreakerPolicy(wait_open=5))
    with pytest.raises(ValueError, match="another policy"):
        reg.breaker("db", BreakerPolicy(wait_open=6))


def test_breaker_options() -> None:
    reg = Registry()
    assert reg.register(coro, "shared1", breaker="db").breaker == "db"
    assert reg.register(coro, "own", breaker=True).breaker == "own"
    assert reg.register(coro, "policy", breaker=BreakerPolicy(wait_open=2)).breaker == "policy"
    assert reg.register(coro, "none", breaker=False).breaker is None
    assert set(reg.breakers) == {"db", "own", "policy"}
    assert reg.breakers["policy"].wait_open == 2


def test_unknown_type() -> None:
    with pytest.raises(UnknownTaskType):
        Registry().get("missing")


def test_merge() -> None:
    a, b = Registry(), Registry()
    b.register(coro, "x", backoff=BackoffPolicy(base=1), breaker="db")
    a.merge(b)
    assert a.get("x").backoff == BackoffPolicy(base=1)
    assert "db" in a.breakers


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("hulk_test_mod")]:
        del sys.modules[name]


def write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_load_module_with_an_app(module_dir: Path) -> None:
    write(
        module_dir,
        "hulk_test_mod_app",
        """
        from hulk.engine import Hulk
        app = Hulk(builtins=False)

        @app.task("mod.hello")
        async def hello(payload):
            return "hi"
        """,
    )
    reg = Registry()
    reg.load("hulk_test_mod_app")
    assert "mod.hello" in reg


def test_load_module_attr_and_shared_decorator(module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "shared", Registry())
    monkeypatch.setattr(registry_module, "task", registry_module.shared.task)
    write(
        module_dir,
        "hulk_test_mod_shared",
        """
        from hulk.engine import registry

        @registry.task("mod.shared")
        def shared_handler(payload):
            return 1
        """,
    )
    write(
        module_dir,
        "hulk_test_mod_attr",
        """
        from hulk.engine import Registry
        mine = Registry()
        mine.register(lambda payload: payload, "mod.attr")
        nothing = 3
        """,
    )
    app = Hulk(EngineConfig(handlers=("hulk_test_mod_shared",)), builtins=False)
    assert "mod.shared" in app.registry
    app.load("hulk_test_mod_attr:mine")
    assert "mod.attr" in app.registry
    with pytest.raises(ValueError, match="names no Registry"):
        app.load("hulk_test_mod_attr:nothing")
    with pytest.raises(ImportError):
        app.load("hulk_test_mod_missing")
