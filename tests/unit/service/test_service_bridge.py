"""`hulk.service.bridge`: fetched deliveries become engine tasks and are settled through their message."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from hulk.engine import DuplicateTask, EngineConfig, EngineStopped, Hulk, Task, UnknownTaskType
from hulk.errors import QueueFull
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.intake import NatsDelivery
from hulk.service.bridge import CancelledIds, EngineIntake


class FakeDelivery:
    """What the bridge and the engine adapters use of a `NatsDelivery`, recording the settlement."""

    def __init__(self, task: TaskEnvelope, attempt: int = 1) -> None:
        self.task = task
        self.attempt = attempt
        self.settled: list[tuple[Any, ...]] = []
        self.done = asyncio.Event()

    async def ack(self) -> None:
        self._settle("ack")

    def ack_nowait(self) -> None:
        self._settle("ack")

    async def nak(self, delay: float = 0.0) -> None:
        self._settle("nak", delay)

    async def term(self, reason: str, error: str | None = None) -> None:
        self._settle("term", reason, error)

    async def in_progress(self) -> None:
        pass

    def _settle(self, *how: Any) -> None:
        self.settled.append(how)
        self.done.set()


def delivery(kind: str = "echo", payload: Any = None, **kwargs: Any) -> FakeDelivery:
    return FakeDelivery(TaskEnvelope(type=kind, payload=payload, tenant="acme"), **kwargs)


def as_nats(d: FakeDelivery) -> NatsDelivery:
    return cast(NatsDelivery, d)


class RefusingEngine:
    store = None  # not the KV store: settlements are not held for a record

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.submitted: list[Task] = []

    def submit_task(self, task: Task, delivery: object = None) -> Task:
        self.submitted.append(task)
        raise self.error


def test_cancelled_ids_are_bounded_and_popped_once() -> None:
    ids = CancelledIds(capacity=2)
    for task_id in ("a", "b", "c"):
        ids.add(task_id)
    assert not ids.pop("a")  # the oldest was forgotten
    assert ids.pop("b")
    assert not ids.pop("b")
    ids.add("c")  # added again: still once
    assert ids.pop("c")
    assert not ids.pop("c")


async def test_a_delivery_runs_on_the_engine_and_is_acked() -> None:
    engine = Hulk(EngineConfig(workers=2))
    await engine.start()
    try:
        bridge = EngineIntake(engine, CancelledIds())
        d = delivery("echo", {"x": 1}, attempt=3)
        d.task.headers.update(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01", other="dropped")
        bridge(as_nats(d))
        task = await engine.wait(d.task.id, timeout=5)
        await asyncio.wait_for(d.done.wait(), 5)
    finally:
        await engine.stop(5)
    assert d.settled == [("ack",)]
    assert (task.status, task.result, task.tenant) == ("succeeded", {"x": 1}, "acme")
    assert task.attempt == 3  # two attempts were spent by earlier deliveries
    assert task.trace == {"traceparent": d.task.headers["traceparent"]}


async def test_a_failing_task_on_its_last_attempt_is_terminated() -> None:
    engine = Hulk(EngineConfig(workers=1, max_retries=0))
    await engine.start()
    try:
        d = delivery("fail")
        EngineIntake(engine, CancelledIds())(as_nats(d))
        await asyncio.wait_for(d.done.wait(), 5)
    finally:
        await engine.stop(5)
    assert d.settled[0][:2] == ("term", "retries exhausted")
    assert "BuiltinFailure" in d.settled[0][2]


async def test_a_task_cancelled_elsewhere_is_acked_without_running() -> None:
    engine = RefusingEngine(AssertionError("must not be submitted"))
    cancelled = CancelledIds()
    d = delivery()
    cancelled.add(d.task.id)
    bridge = EngineIntake(cast(Hulk, engine), cancelled)
    bridge(as_nats(d))
    await bridge.wait()
    assert d.settled == [("ack",)]
    assert engine.submitted == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UnknownTaskType("nope"), ("term", "unknown task type")),
        (QueueFull("full"), ("nak", 0.1)),
        (EngineStopped("draining"), ("nak", 0.1)),
        (DuplicateTask("t1"), ("nak", 5.0)),
        (RuntimeError("boom"), ("term", "refused by engine")),
    ],
)
async def test_refusals_settle_the_message(error: Exception, expected: tuple[Any, ...]) -> None:
    engine = RefusingEngine(error)
    bridge = EngineIntake(cast(Hulk, engine), CancelledIds())
    d = delivery()
    bridge(as_nats(d))
    await bridge.wait()
    assert len(engine.submitted) == 1
    assert d.settled[0][: len(expected)] == expected
    if expected[0] == "term":
        assert type(error).__name__ in d.settled[0][2]
