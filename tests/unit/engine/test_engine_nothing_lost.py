"""Random workloads: every accepted task ends terminal or is handed back, through legal transitions only."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from hulk.engine import TRANSITIONS, BackoffPolicy, BreakerPolicy, EngineConfig, Hulk, Task, TaskStatus
from hulk.errors import QueueFull
from hulk.testing import InMemoryRuntime

S = TaskStatus


def make_app(gate: asyncio.Event) -> Hulk:
    app = Hulk(EngineConfig(workers=3, tick_interval=None), builtins=True)
    policy = BackoffPolicy(base=1.0, max_delay=5.0, jitter="full")

    @app.task("flaky", retries=2, backoff=policy)
    async def flaky(payload: Any, *, task: Task) -> Any:
        if payload["fail"] >= task.attempt:
            raise RuntimeError("flaky")
        return task.attempt

    @app.task("slow", timeout=3.0, retries=1, backoff=policy)
    async def slow(payload: Any) -> Any:
        await gate.wait()
        return "done"

    @app.task(
        "guarded", retries=1, backoff=policy, breaker=BreakerPolicy(minimum_calls=2, window_size=4, wait_open=4.0)
    )
    async def guarded(payload: Any) -> Any:
        if payload:
            raise RuntimeError("down")
        return "up"

    @app.task("limited", concurrency=1, retries=0)
    async def limited(payload: Any) -> Any:
        await asyncio.sleep(0)
        return payload

    return app


@pytest.mark.parametrize("seed", range(8))
async def test_random_workload_loses_nothing(seed: int) -> None:
    rng = random.Random(seed)
    gate = asyncio.Event()
    rt = InMemoryRuntime(make_app(gate), seed=seed, queue_size=8, max_scheduled=16)
    await rt.app.start()
    accepted: list[Task] = []
    for _step in range(60):
        op = rng.random()
        try:
            if op < 0.45:
                kind = rng.choice(["flaky", "slow", "guarded", "limited", "echo"])
                payload: Any = {
                    "flaky": {"fail": rng.randint(0, 3)},
                    "slow": None,
                    "guarded": rng.random() < 0.5,
                    "limited": rng.randint(0, 9),
                    "echo": rng.randint(0, 9),
                }[kind]
                delay = rng.choice([None, None, None, rng.uniform(0.1, 4.0)])
                accepted.append(rt.submit(kind, payload, delay=delay))
            elif op < 0.55 and accepted:
                rt.app.cancel(rng.choice(accepted).id)
            elif op < 0.65:
                gate.set() if rng.random() < 0.5 else gate.clear()
            elif op < 0.85:
                await rt.advance(rng.uniform(0.0, 3.0))
            else:
                await rt.settle()
        except QueueFull:
            pass
    result = await rt.app.stop(0.0)

    handed_back = {task.id for task in result.tasks}
    assert len(handed_back) == len(result.tasks), "a task handed back twice"
    for task in accepted:
        if task.id in handed_back:
            assert task.status in (S.QUEUED, S.SCHEDULED, S.RETRYING)
        else:
            assert task.status in (S.SUCCEEDED, S.DEAD, S.CANCELLED), (task, rt.history(task.id))
    # Every recorded move is legal, starting from "not submitted".
    last: dict[str, TaskStatus | None] = {}
    for task, previous, status, _at in rt.events.events:
        assert previous == last.get(task.id), (task, previous, last.get(task.id))
        assert status in TRANSITIONS[previous]
        last[task.id] = status
    assert set(last) == {task.id for task in accepted}
