# The tests read task.status again after awaits that change it; mypy would keep the earlier narrowing.
# mypy: disable-error-code="comparison-overlap"
"""Every transition and failure mode of the worker pool, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from hulk.engine import BackoffPolicy, BreakerPolicy, EngineConfig, Hulk, Task, TaskStatus
from hulk.engine.errors import (
    DuplicateTask,
    EngineStopped,
    IllegalTransition,
    PayloadError,
    TaskFailed,
    TaskNotFound,
    UnknownTaskType,
)
from hulk.errors import HulkError, QueueFull
from hulk.testing import InMemoryRuntime

NO_JITTER = BackoffPolicy(base=1.0, factor=2.0, max_delay=10.0, jitter="none")


class Boom(Exception):
    """A handler's failure."""


class Handlers:
    """Test handlers with the state the tests steer (gates) and observe (calls)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.thread_gate = threading.Event()
        self.thread_done = threading.Event()
        self.calls: list[str] = []
        self.app = Hulk(EngineConfig(workers=4, tick_interval=None, seed=0), builtins=True)
        app = self.app
        self.dead: list[Task] = []

        @app.task("ok")
        async def ok(payload: Any) -> Any:
            self.calls.append("ok")
            return {"ok": payload}

        @app.task("boom", retries=0)
        async def boom(payload: Any) -> Any:
            raise Boom(f"boom {payload}")

        @app.task("flaky", retries=2, backoff=NO_JITTER)
        async def flaky(payload: Any, *, task: Task) -> Any:
            if task.attempt <= payload["fail"]:
                raise Boom(f"attempt {task.attempt}")
            return task.attempt

        @app.task("block", timeout=5.0, retries=0)
        async def block(payload: Any) -> Any:
            self.calls.append("block")
            await self.gate.wait()
            return "released"

        @app.task("sync_ok")
        def sync_ok(payload: Any) -> Any:
            return payload * 2

        @app.task("sync_block", timeout=5.0, retries=0)
        def sync_block(payload: Any) -> Any:
            try:
                self.thread_gate.wait(30)
                return "late"
            finally:
                self.thread_done.set()

        @app.task("bad_result", retries=0)
        async def bad_result(payload: Any) -> Any:
            return object()

        @app.task("swallow", timeout=1.0, retries=0)
        async def swallow(payload: Any) -> Any:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                return "swallowed"
            return "released"

        @app.task("wrap", timeout=1.0, retries=0)
        async def wrap(payload: Any) -> Any:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                raise RuntimeError("wrapped") from None
            return "released"

        @app.task("limited", concurrency=1, retries=0)
        async def limited(payload: Any) -> Any:
            await self.gate.wait()
            return payload

        guarded_policy = BreakerPolicy(minimum_calls=2, window_size=2, wait_open=10.0, half_open_calls=1)

        @app.task("guarded", retries=0, breaker=guarded_policy)
        async def guarded(payload: Any) -> Any:
            if payload.get("fail"):
                raise Boom("dependency down")
            return "up"

        fast_policy = BreakerPolicy(minimum_calls=1, window_size=1, wait_open=10.0, fail_fast=True)

        @app.task("fastfail", retries=0, breaker=fast_policy)
        async def fastfail(payload: Any) -> Any:
            raise Boom("down")

        @app.on_dead
        def on_dead(task: Task) -> None:
            self.dead.append(task)


@pytest.fixture
def h() -> Handlers:
    return Handlers()


def runtime(h: Handlers, **overrides: Any) -> InMemoryRuntime:
    overrides.setdefault("workers", 4)
    return InMemoryRuntime(h.app, **overrides)


def test_statuses_are_spelled_exactly() -> None:
    assert [s.value for s in TaskStatus] == [
        "scheduled",
        "queued",
        "running",
        "retrying",
        "succeeded",
        "dead",
        "cancelled",
    ]


@pytest.mark.parametrize(
    ("type_", "payload", "history", "error"),
    [
        ("ok", 1, ["queued", "running", "succeeded"], None),
        ("echo", {"a": [1, 2]}, ["queued", "running", "succeeded"], None),
        ("boom", 7, ["queued", "running", "dead"], "Boom"),
        ("bad_result", None, ["queued", "running", "dead"], "PayloadError"),
        ("fastfail", None, ["queued", "running", "dead"], "Boom"),
    ],
)
async def test_single_attempt_outcomes(
    h: Handlers, type_: str, payload: Any, history: list[str], error: str | None
) -> None:
    async with runtime(h) as rt:
        task = rt.submit(type_, payload)
        await rt.settle()
        assert rt.history(task.id) == history
        assert task.attempt == 1
        assert task.finished_at is not None
        assert task.started_at is not None
        if error is None:
            assert task.error is None
        else:
            assert task.error is not None
            assert task.error.type == error
            assert h.dead == [task]
            assert "Traceback" in task.error.traceback


async def test_success_records_result_times_and_metrics(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("ok", 3)
        await rt.settle()
        done = await rt.wait(task.id)
        assert done.status is TaskStatus.SUCCEEDED
        assert done.result == {"ok": 3}
        assert done.created_at <= done.queued_at <= done.started_at <= done.finished_at  # type: ignore[operator]
        counts = rt.app.metrics_snapshot()["types"]["ok"]
        assert (counts["submitted"], counts["started"], counts["succeeded"], counts["failed"]) == (1, 1, 1, 0)
        assert counts["duration"]["count"] == 1


async def test_retries_with_backoff_then_success(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("flaky", {"fail": 2})
        await rt.settle()
        assert task.status is TaskStatus.RETRYING
        assert task.error is not None
        assert task.error.message == "attempt 1"
        assert task.run_at == pytest.approx(rt.clock.time() + 1.0)  # base 1s, no jitter
        await rt.advance(0.99)
        assert task.status is TaskStatus.RETRYING
        await rt.advance(0.01)
        assert task.status is TaskStatus.RETRYING
        assert task.attempt == 2
        assert task.run_at == pytest.approx(rt.clock.time() + 2.0)  # base × factor
        await rt.advance(2.0)
        assert task.status is TaskStatus.SUCCEEDED
        assert task.result == 3
        assert rt.history(task.id) == [
            "queued",
            "running",
            "retrying",
            "queued",
            "running",
            "retrying",
            "queued",
            "running",
            "succeeded",
        ]
        assert rt.app.metrics_snapshot()["types"]["flaky"]["retried"] == 2


async def test_retry_exhaustion_is_dead_and_handed_to_dead_letter(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("flaky", {"fail": 99})
        await rt.settle()
        for _ in range(3):
            await rt.advance(10.0)
        assert task.status is TaskStatus.DEAD
        assert task.attempt == 3  # first attempt + 2 retries
        assert h.dead == [task]
        dead = await rt.app.dead()
        assert [t.id for t in dead] == [task.id]
        counts = rt.app.metrics_snapshot()["types"]["flaky"]
        assert (counts["failed"], counts["retried"], counts["dead"]) == (3, 2, 1)


async def test_async_timeout_is_a_failed_attempt(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("block")
        await rt.settle()
        assert task.status is TaskStatus.RUNNING
        await rt.advance(4.99)
        assert task.status is TaskStatus.RUNNING
        await rt.advance(0.02)
        assert task.status is TaskStatus.DEAD
        assert task.timed_out
        assert task.error is not None
        assert task.error.type == "TaskTimeout"
        assert rt.app.metrics_snapshot()["types"]["block"]["timeouts"] == 1
        # The worker survived the cancellation and still runs tasks.
        other = rt.submit("ok", 1)
        await rt.settle()
        assert other.status is TaskStatus.SUCCEEDED


async def test_timeout_retries_when_retries_remain(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("block", retries=1)
        await rt.settle()
        await rt.advance(5.0)
        assert task.status is TaskStatus.RETRYING
        assert task.timed_out


async def test_sync_timeout_discards_the_thread_result(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("sync_block")
        await rt.settle()
        assert task.status is TaskStatus.RUNNING
        await rt.advance(5.0)
        assert task.status is TaskStatus.DEAD
        assert task.timed_out
        h.thread_gate.set()
        assert await asyncio.to_thread(h.thread_done.wait, 10)
        await rt.settle()
        assert task.status is TaskStatus.DEAD
        assert task.result is None


async def test_sync_handler_does_not_block_the_loop(h: Handlers) -> None:
    async with runtime(h) as rt:
        slow = rt.submit("sync_block")
        fast = rt.submit("ok", 2)
        done = await rt.wait(fast.id)
        assert done.status is TaskStatus.SUCCEEDED
        assert slow.status is TaskStatus.RUNNING
        h.thread_gate.set()
        assert (await rt.wait(slow.id)).result == "late"


async def test_sync_handler_result(h: Handlers) -> None:
    async with runtime(h) as rt:
        assert await rt.app.call("sync_ok", 21, timeout=10) == 42


@pytest.mark.parametrize(
    ("type_", "status", "result", "error"),
    [("swallow", "succeeded", "swallowed", None), ("wrap", "dead", None, "TaskTimeout")],
)
async def test_handler_that_catches_the_timeout(
    h: Handlers, type_: str, status: str, result: Any, error: str | None
) -> None:
    async with runtime(h) as rt:
        task = rt.submit(type_)
        await rt.settle()
        await rt.advance(1.0)
        assert task.status == status
        assert task.result == result
        assert (task.error.type if task.error else None) == error
        other = rt.submit("ok", 1)
        await rt.settle()
        assert other.status is TaskStatus.SUCCEEDED


async def test_breaker_open_holds_tasks_then_recovers(h: Handlers) -> None:
    async with runtime(h) as rt:
        for _ in range(2):
            rt.submit("guarded", {"fail": True})
        await rt.settle()
        breaker = rt.pool.breakers["guarded"]
        assert breaker.metrics(rt.clock.monotonic())["state"] == "open"
        held = rt.submit("guarded", {})
        await rt.settle()
        assert held.status is TaskStatus.SCHEDULED
        assert held.attempt == 0  # never ran
        await rt.advance(5.0)
        assert held.status is TaskStatus.SCHEDULED
        await rt.advance(5.0)
        assert held.status is TaskStatus.SUCCEEDED
        assert rt.history(held.id) == ["queued", "scheduled", "queued", "running", "succeeded"]
        assert breaker.metrics(rt.clock.monotonic())["state"] == "closed"


async def test_breaker_fail_fast_kills_without_running(h: Handlers) -> None:
    async with runtime(h) as rt:
        first = rt.submit("fastfail")
        await rt.settle()
        assert first.status is TaskStatus.DEAD
        second = rt.submit("fastfail")
        await rt.settle()
        assert second.status is TaskStatus.DEAD
        assert second.attempt == 0
        assert second.error is not None
        assert second.error.type == "BreakerOpen"
        assert rt.history(second.id) == ["queued", "dead"]


async def test_cancel_while_queued(h: Handlers) -> None:
    async with runtime(h, workers=1) as rt:
        blocker = rt.submit("block")
        await rt.settle()
        queued = rt.submit("ok", 1)
        assert queued.status is TaskStatus.QUEUED
        assert rt.app.cancel(queued.id) is True
        assert queued.status is TaskStatus.CANCELLED
        assert rt.app.cancel(queued.id) is False  # already terminal
        h.gate.set()
        await rt.settle()
        assert blocker.status is TaskStatus.SUCCEEDED
        assert rt.history(queued.id) == ["queued", "cancelled"]
        assert h.calls == ["block"]  # the cancelled task never ran


async def test_cancel_while_running(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("block")
        await rt.settle()
        assert rt.app.cancel(task.id) is True
        await rt.settle()
        assert task.status is TaskStatus.CANCELLED
        assert task.error is not None
        assert task.error.type == "TaskCancelled"
        assert rt.history(task.id) == ["queued", "running", "cancelled"]
        assert rt.app.metrics_snapshot()["types"]["block"]["cancelled"] == 1


async def test_cancel_sync_while_running(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("sync_block")
        await rt.settle()
        assert rt.app.cancel(task.id) is True
        await rt.settle()
        assert task.status is TaskStatus.CANCELLED
        h.thread_gate.set()
        assert await asyncio.to_thread(h.thread_done.wait, 10)


async def test_cancel_delayed_and_retrying(h: Handlers) -> None:
    async with runtime(h) as rt:
        delayed = rt.submit("ok", 1, delay=30.0)
        retrying = rt.submit("flaky", {"fail": 5})
        await rt.settle()
        assert delayed.status is TaskStatus.SCHEDULED
        assert retrying.status is TaskStatus.RETRYING
        assert rt.app.cancel(delayed.id)
        assert rt.app.cancel(retrying.id)
        await rt.advance(60.0)
        assert delayed.status is TaskStatus.CANCELLED
        assert retrying.status is TaskStatus.CANCELLED
        assert rt.pool.scheduled == 0
        assert rt.app.cancel("no-such-id") is False


async def test_full_queue_fails_fast(h: Handlers) -> None:
    async with runtime(h, workers=1, queue_size=2) as rt:
        rt.submit("block")
        await rt.settle()
        rt.submit("ok", 1)
        rt.submit("ok", 2)
        with pytest.raises(QueueFull, match="retry later") as info:
            rt.submit("ok", 3)
        assert info.value.capacity == 2
        assert rt.app.metrics_snapshot()["rejected"] == 1
        h.gate.set()
        await rt.settle()
        await rt.pool.wait_for_room()
        assert rt.submit("ok", 4).status is TaskStatus.QUEUED


async def test_wait_for_room_wakes_producer(h: Handlers) -> None:
    async with runtime(h, workers=1, queue_size=1) as rt:
        rt.submit("block")
        await rt.settle()
        rt.submit("ok", 1)
        waiter = asyncio.ensure_future(rt.pool.wait_for_room())
        await asyncio.sleep(0)
        assert not waiter.done()
        h.gate.set()
        await asyncio.wait_for(waiter, 10)


async def test_delayed_task_runs_when_due(h: Handlers) -> None:
    async with runtime(h) as rt:
        task = rt.submit("ok", 5, delay=10.0)
        assert task.status is TaskStatus.SCHEDULED
        assert task.run_at == pytest.approx(rt.clock.time() + 10.0)
        await rt.advance(9.0)
        assert task.status is TaskStatus.SCHEDULED
        await rt.advance(1.0)
        assert task.status is TaskStatus.SUCCEEDED
        assert rt.history(task.id) == ["scheduled", "queued", "running", "succeeded"]


async def test_delayed_set_is_bounded(h: Handlers) -> None:
    async with runtime(h, max_scheduled=1) as rt:
        rt.submit("ok", 1, delay=5.0)
        with pytest.raises(QueueFull):
            rt.submit("ok", 2, delay=5.0)


async def test_due_tasks_wait_for_queue_room(h: Handlers) -> None:
    async with runtime(h, workers=1, queue_size=1) as rt:
        rt.submit("block")
        await rt.settle()
        rt.submit("ok", 0)  # fills the queue
        later = [rt.submit("ok", n, delay=1.0) for n in (1, 2)]
        await rt.advance(1.0)
        assert all(t.status is TaskStatus.SCHEDULED for t in later)
        h.gate.set()
        await rt.settle()
        await rt.advance(0.0)
        await rt.advance(0.0)
        assert all(t.status is TaskStatus.SUCCEEDED for t in later)


async def test_unknown_type_and_bad_payload_store_nothing(h: Handlers) -> None:
    async with runtime(h, max_payload_bytes=64) as rt:
        with pytest.raises(UnknownTaskType, match="nope") as info:
            rt.submit("nope", {})
        assert info.value.task_type == "nope"
        with pytest.raises(PayloadError, match="not JSON-serialisable"):
            rt.submit("ok", {"x": object()})
        with pytest.raises(PayloadError, match="bytes"):
            rt.submit("ok", "x" * 100)
        assert isinstance(info.value, HulkError)
        await rt.settle()
        assert len(rt.store) == 0
        assert list(rt.events.events) == []


async def test_concurrency_limit_parks_tasks(h: Handlers) -> None:
    async with runtime(h, workers=4) as rt:
        tasks = [rt.submit("limited", n) for n in range(3)]
        await rt.settle()
        assert [t.status for t in tasks] == [TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.QUEUED]
        assert rt.pool.busy == 1
        assert rt.pool.depth == 2
        other = rt.submit("ok", 1)
        await rt.settle()
        assert other.status is TaskStatus.SUCCEEDED  # other types are not held back
        h.gate.set()
        await rt.settle()
        assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 3
        assert [t.result for t in tasks] == [0, 1, 2]


async def test_parked_tasks_count_against_capacity_and_cancel(h: Handlers) -> None:
    async with runtime(h, workers=4, queue_size=2) as rt:
        tasks = []
        for n in range(3):
            tasks.append(rt.submit("limited", n))
            await rt.settle()
        assert rt.pool.depth == 2  # parked, out of the native queue but still counted
        with pytest.raises(QueueFull):
            rt.submit("ok", 1)
        assert rt.app.cancel(tasks[2].id)
        assert rt.pool.depth == 1
        h.gate.set()
        await rt.settle()
        assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.CANCELLED]


async def test_shutdown_mid_task_hands_everything_back(h: Handlers) -> None:
    rt = runtime(h, workers=1)
    await rt.app.start()
    running = rt.submit("block")
    await rt.settle()
    queued = rt.submit("ok", 1)
    delayed = rt.submit("ok", 2, delay=30.0)
    retrying = rt.submit("flaky", {"fail": 9})
    result = await rt.app.stop(0.0)
    assert not result.finished_in_time
    assert {t.id for t, _ in result.not_started} == {queued.id, delayed.id, retrying.id}
    assert [t.id for t, _ in result.interrupted] == [running.id]
    assert running.status is TaskStatus.RETRYING
    assert running.error is not None
    assert running.error.type == "TaskInterrupted"
    assert queued.status is TaskStatus.QUEUED
    assert delayed.status is TaskStatus.SCHEDULED
    assert {t.id for t in result.tasks} == {running.id, queued.id, delayed.id, retrying.id}
    with pytest.raises(EngineStopped):
        rt.submit("ok", 3)
    assert rt.app.health()["pool"].status == "stopped"


async def test_drain_lets_running_tasks_finish(h: Handlers) -> None:
    rt = runtime(h)
    await rt.app.start()
    task = rt.submit("block")
    await rt.settle()
    stopping = asyncio.ensure_future(rt.app.stop(30.0))
    await asyncio.sleep(0)
    assert not stopping.done()
    h.gate.set()
    result = await stopping
    assert result.finished_in_time
    assert result.tasks == []
    assert task.status is TaskStatus.SUCCEEDED


async def test_handed_back_tasks_can_be_resubmitted(h: Handlers) -> None:
    first = runtime(h, workers=1)
    await first.app.start()
    first.submit("block")
    await first.settle()
    queued = first.submit("ok", 1)
    result = await first.app.stop(0.0)
    second = runtime(h, workers=1)
    async with second:
        h.gate.set()
        for task, _delivery in result.not_started + result.interrupted:
            second.app.submit_task(task)
        await second.settle()
        assert queued.status is TaskStatus.SUCCEEDED
        assert all(t.status is TaskStatus.SUCCEEDED for t in result.tasks)


async def test_resubmitting_live_or_finished_tasks_is_refused(h: Handlers) -> None:
    async with runtime(h, workers=1) as rt:
        rt.submit("block")
        await rt.settle()
        task = rt.submit("ok", 1)
        with pytest.raises(DuplicateTask):
            rt.app.submit_task(task)
        h.gate.set()
        await rt.settle()
        with pytest.raises(IllegalTransition):
            rt.app.submit_task(task)


async def test_idempotency_key_returns_the_first_task(h: Handlers) -> None:
    async with runtime(h) as rt:
        first = rt.submit("ok", 1, idempotency_key="k")
        again = rt.submit("ok", 2, idempotency_key="k")
        other_tenant = rt.submit("ok", 3, idempotency_key="k", tenant="t2")
        assert again is first
        assert other_tenant is not first
        await rt.settle()
        assert rt.submit("ok", 4, idempotency_key="k") is first
        rt.clock.advance(rt.config.store_ttl + 1)
        assert rt.submit("ok", 5, idempotency_key="k") is not first


async def test_get_wait_result_and_not_found(h: Handlers) -> None:
    async with runtime(h, workers=1) as rt:
        blocker = rt.submit("block")
        await rt.settle()
        live = await rt.app.get(blocker.id)
        assert live is not None
        assert live.status is TaskStatus.RUNNING
        assert live is not blocker
        with pytest.raises(TimeoutError):
            await rt.app.wait(blocker.id, timeout=0)
        with pytest.raises(TaskNotFound):
            await rt.app.wait("nope")
        assert await rt.app.get("nope") is None
        boom = rt.submit("boom", 1)
        h.gate.set()
        with pytest.raises(TaskFailed, match="Boom") as info:
            await rt.app.result(boom.id, timeout=10)
        assert info.value.task.status is TaskStatus.DEAD
        assert await rt.app.result(blocker.id, timeout=10) == "released"
        stored = await rt.app.get(blocker.id)
        assert stored is not None
        assert stored.result == "released"


async def test_async_dead_letter_hook_runs(h: Handlers) -> None:
    seen: list[str] = []

    @h.app.on_dead
    async def record(task: Task) -> None:
        seen.append(task.id)

    @h.app.on_dead
    def broken(task: Task) -> None:
        raise RuntimeError("hook bug")

    async with runtime(h) as rt:
        task = rt.submit("boom", 1)
        await rt.settle()
        assert seen == [task.id]
        assert h.dead == [task]


async def test_execution_order_and_retry_times_are_reproducible() -> None:
    async def scenario() -> list[tuple[str, str, float]]:
        app = Hulk(EngineConfig(workers=2, tick_interval=None, seed=7))

        @app.task("jittery", retries=3, backoff=BackoffPolicy(base=1.0, max_delay=30.0, jitter="full"))
        async def jittery(payload: Any, *, task: Task) -> Any:
            if task.attempt <= payload:
                raise Boom("again")
            return task.attempt

        async with InMemoryRuntime(app, seed=7) as rt:
            for n in range(6):
                rt.submit("jittery", n % 4)
            await rt.settle()
            for _ in range(12):
                await rt.advance(2.0)
            return [(task.id, str(status), at) for task, _prev, status, at in rt.events.events]

    first = await scenario()
    second = await scenario()
    assert first == second
    assert sum(1 for _, status, _ in first if status == "retrying") == 0 + 1 + 2 + 3 + 0 + 1


async def test_submit_many_accepts_a_prefix_when_the_queue_fills(h: Handlers) -> None:
    async with runtime(h, workers=1, queue_size=3) as rt:
        rt.submit("block")
        await rt.settle()
        tasks = rt.app.submit_many("ok", [1, 2, 3, 4, 5])
        assert [t.payload for t in tasks] == [1, 2, 3]
        assert len({t.id for t in tasks}) == 3
        assert all(t.status is TaskStatus.QUEUED and t.created_at == tasks[0].created_at for t in tasks)
        with pytest.raises(QueueFull):
            rt.app.submit_many("ok", [6])
        h.gate.set()
        await rt.settle()
        assert [t.result for t in tasks] == [{"ok": 1}, {"ok": 2}, {"ok": 3}]
        assert rt.app.metrics_snapshot()["types"]["ok"]["submitted"] == 3
        assert rt.history(tasks[0].id) == ["queued", "running", "succeeded"]


async def test_submit_many_checks_everything_first(h: Handlers) -> None:
    async with runtime(h, max_payload_bytes=16) as rt:
        with pytest.raises(PayloadError):
            rt.app.submit_many("ok", [1, {"x": object()}])
        with pytest.raises(PayloadError, match="bytes"):
            rt.app.submit_many("ok", ["y" * 40])
        with pytest.raises(UnknownTaskType):
            rt.app.submit_many("nope", [1])
        assert rt.app.submit_many("ok", []) == []
        assert rt.pool.depth == 0
        await rt.app.stop(0.0)
        with pytest.raises(EngineStopped):
            rt.app.submit_many("ok", [1])


async def test_the_live_index_finds_unfinished_tasks_and_stays_bounded(h: Handlers) -> None:
    # New tasks are filed by id lazily (when someone looks, or when the list of new ones grows):
    # a long run keeps that list bounded, and a task accepted long ago is still found.
    async with runtime(h, workers=2, queue_size=100) as rt:
        held = rt.submit("block")
        await rt.settle()
        finished: list[Task] = []
        for _ in range(45):
            finished.extend(rt.app.submit_many("ok", list(range(99))))
            await rt.settle()
        pool = rt.pool
        assert len(pool._fresh) <= pool._fresh_limit
        assert all(task.status is TaskStatus.SUCCEEDED for task in finished)
        assert pool.get(held.id) is held
        assert pool.get(finished[0].id) is None
        queued = rt.submit("ok", 1)
        assert pool.get(queued.id) is queued
        assert rt.app.cancel(held.id)
        h.gate.set()
        await rt.settle()
        assert held.status is TaskStatus.CANCELLED
        assert queued.status is TaskStatus.SUCCEEDED
        assert pool.get(queued.id) is None


async def test_a_batch_of_slow_handlers_spreads_over_every_worker() -> None:
    # Woken one per batch, workers must still all get a task of a batch whose handlers wait.
    app = Hulk(EngineConfig(workers=8, batch_size=64))
    release = asyncio.Event()
    all_started = asyncio.Event()
    started = 0

    @app.task("slow")
    async def slow(payload: Any) -> None:
        nonlocal started
        started += 1
        if started == 8:
            all_started.set()
        await release.wait()

    await app.start()

    async def all_asleep() -> None:
        # Workers that have not gone to sleep yet would each take a task without being woken.
        while len(app.pool._sleepers) < 8:  # noqa: ASYNC110 - no event marks a worker falling asleep
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(all_asleep(), 5)
        tasks = [app.submit("slow", i) for i in range(8)]
        await asyncio.wait_for(all_started.wait(), 5)  # eight at once, not one batch on one worker
        assert app.pool.busy == 8
        release.set()
        for task in tasks:
            assert (await app.wait(task.id, timeout=5)).status is TaskStatus.SUCCEEDED
    finally:
        await app.stop()


async def test_a_producer_cancelled_after_its_wake_passes_the_room_on() -> None:
    # Room is handed out first come first served; a woken producer that is cancelled before it
    # submits must not leave the next one waiting.
    app = Hulk(EngineConfig(workers=1, queue_size=1))
    gate = asyncio.Event()

    @app.task("hold")
    async def hold(payload: Any) -> None:
        await gate.wait()

    await app.start()
    try:
        app.submit("hold", 1)  # taken by the worker, which waits on the gate
        while app.pool.depth:  # noqa: ASYNC110 - no event marks the worker taking it
            await asyncio.sleep(0)
        app.submit("hold", 2)  # fills the queue
        first = asyncio.ensure_future(app.pool.wait_for_room())
        second = asyncio.ensure_future(app.pool.wait_for_room())
        pool = app.pool
        while len(pool._room_waiters) < 2:  # noqa: ASYNC110 - no event marks a producer starting to wait
            await asyncio.sleep(0)
        assert not first.done()
        assert not second.done()
        pool._q.pop_many(1)  # room for one, as a worker taking it would make
        pool._wake_room()
        first.cancel()  # woken, but cancelled before it could use the room
        await asyncio.wait_for(second, 5)  # the turn passed on
        assert first.cancelled()
    finally:
        gate.set()
        await app.stop()
