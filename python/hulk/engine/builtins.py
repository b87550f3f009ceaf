"""Built-in handlers for demos and load tests: `echo`, `sleep`, `fail` and `cpu`."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from hulk.engine.errors import PayloadError
from hulk.engine.registry import Registry

__all__ = ["BuiltinFailure", "cpu", "echo", "fail", "register_builtins", "sleep"]


class BuiltinFailure(Exception):
    """The failure the `fail` handler raises on purpose."""


def _number(payload: Any, key: str, default: float) -> float:
    if payload is None:
        return default
    if not isinstance(payload, dict):
        raise PayloadError(f"payload must be an object like {{{key!r}: number}}, got {type(payload).__name__}")
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise PayloadError(f"payload {key!r} must be a number >= 0, got {value!r}")
    return float(value)


async def echo(payload: Any) -> Any:
    """Returns its payload."""
    return payload


async def sleep(payload: Any) -> None:
    """Sleeps `payload["ms"]` milliseconds on the event loop (payload `{"ms": N}`)."""
    await asyncio.sleep(_number(payload, "ms", 0.0) / 1000.0)


_rng = random.Random()


async def fail(payload: Any) -> None:
    """Raises `BuiltinFailure` with probability `payload["probability"]` (default 1.0)."""
    probability = _number(payload, "probability", 1.0)
    if _rng.random() < probability:
        raise BuiltinFailure(f"failed on purpose (probability {probability})")


def cpu(payload: Any) -> int:
    """Busy-loops for `payload["us"]` microseconds (in the thread pool); returns the loop count."""
    deadline = time.perf_counter() + _number(payload, "us", 0.0) / 1e6
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    return spins


def register_builtins(registry: Registry) -> None:
    """Registers `echo`, `sleep`, `fail` and `cpu` under those names (skipping names already taken)."""
    for name, fn in (("echo", echo), ("sleep", sleep), ("fail", fail), ("cpu", cpu)):
        if name not in registry:
            registry.register(fn, name)
