"""hulk: a Python task runtime whose hot path is Rust.

The native core (queue, backoff scheduler, circuit breaker, L1 cache, counters) is importable as
`hulk.native`; the engine, messaging, cache and service layers build on it.

The engine's main names are importable from here (`from hulk import Hulk, EngineConfig`); they load
on first use, so `import hulk` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hulk._native import __version__, build_profile

if TYPE_CHECKING:
    from hulk.engine import (
        BackoffPolicy,
        BreakerPolicy,
        EngineConfig,
        Hulk,
        Task,
        TaskStatus,
    )

_ENGINE_NAMES = frozenset({"BackoffPolicy", "BreakerPolicy", "EngineConfig", "Hulk", "Task", "TaskStatus"})

__all__ = [
    "BackoffPolicy",
    "BreakerPolicy",
    "EngineConfig",
    "Hulk",
    "Task",
    "TaskStatus",
    "__version__",
    "build_profile",
]


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        value = getattr(importlib.import_module("hulk.engine"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hulk' has no attribute {name!r}")
