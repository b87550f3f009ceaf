"""The no-op handler hulk runs in the peer comparison: `bench.noop`, counted by the harness."""

from __future__ import annotations

from typing import Any

from bench.peers.harness import TaskCounter
from hulk.engine.registry import Registry

registry = Registry()
counter = TaskCounter()


@registry.task("bench.noop")
async def noop(payload: Any) -> None:
    counter.tick()
