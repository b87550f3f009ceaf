"""The native runner of plain attempts (`hulk._native.TaskRunner`), on a real worker pool.

Each test holds the pool's one worker in a handler, so the tasks it submits stay queued; it takes
them from the queue itself and hands them to the runner, the way the worker loop does, then
checks what the runner did to each and what it left to the Python loop.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Awaitable, Generator
from dataclasses import dataclass
from typing import Any

import pytest

from hulk import context
from hulk._native import TaskRunner
from hulk.engine import BreakerPolicy, EngineConfig, Hulk, Task, TaskStatus
from hulk.engine.errors import PayloadError
from hulk.engine.pool import _resumed


@dataclass
class Held:
    """A started app whose only worker is held, and what its handlers saw."""

    app: Hulk
    seen: list[str]

    def take_queued(self, count: int) -> list[Task]:
        items = self.app.pool._q.pop_many(count)
        assert len(items) == count
        return items

    def run(self, items: list[Task]) -> int:
        return self.app.pool._runner.run(items, self.app.pool._wall)

    def take(self) -> Awaitable[Any] | None:
        return self.app.pool._runner.take()


@pytest.fixture
async def held() -> AsyncIterator[Held]:
    app = Hulk(EngineConfig(workers=1, tick_interval=None, seed=0, timeout=30.0), builtins=False)
    seen: list[str] = []
    gate = asyncio.Event()
    holding = asyncio.Event()

    @app.task("hold")
    async def hold(payload: Any) -> None:
        holding.set()
        await gate.wait()

    @app.task("plain")
    async def plain(payload: Any) -> Any:
        seen.append(context.current_task().id)
        return payload

    @app.task("yields")
    async def yields(payload: Any) -> Any:
        await asyncio.sleep(0)
        return {"after": payload}

    @app.task("raises")
    async def raises(payload: Any) -> Any:
        raise ValueError(f"bad {payload}")

    @app.task("opaque")
    async def opaque(payload: Any) -> Any:
        return object()

    @app.task("limited", concurrency=1)
    async def limited(payload: Any) -> Any:
        return payload

    @app.task("guarded", breaker=BreakerPolicy())
    async def guarded(payload: Any) -> Any:
        return payload

    @app.task("threaded")
    def threaded(payload: Any) -> Any:
        return payload

    async with app:
        app.submit("hold")
        await holding.wait()
        yield Held(app, seen)
        gate.set()


async def test_plain_attempts_run_start_to_finish_in_one_call(held: Held) -> None:
    tasks = [held.app.submit("plain", n) for n in (1, "two", None)] + [held.app.submit("plain", {"n": [4]})]
    items = held.take_queued(4)
    assert held.run(items) == 4
    assert held.take() is None
    for task, payload in zip(tasks, (1, "two", None, {"n": [4]}), strict=True):
        assert task.status is TaskStatus.SUCCEEDED
        assert task.result == payload
        assert task.attempt == 1
        assert task.started_at is not None
        assert task.finished_at is not None
        assert task.finished_at >= task.started_at >= task.created_at
    # Each handler saw its own task as the current one.
    assert held.seen == [task.id for task in tasks]
    held.app.pool.flush()
    snap = held.app.metrics_snapshot()["types"]["plain"]
    assert (snap["started"], snap["succeeded"]) == (4, 4)
    for task in tasks:
        stored = await held.app.get(task.id)
        assert stored is not None
        assert stored.status is TaskStatus.SUCCEEDED


@pytest.mark.parametrize("kind", ["limited", "traced", "threaded", "open breaker"])
async def test_it_stops_before_a_task_it_cannot_run_whole_and_leaves_it_unbegun(held: Held, kind: str) -> None:
    app = held.app
    first = app.submit("plain", 1)
    if kind == "traced":
        special = app.submit("plain", 2, trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    elif kind == "open breaker":
        app.pool.breakers["guarded"].force_open()
        special = app.submit("guarded", 2)
    else:
        special = app.submit(kind, 2)
    app.submit("plain", 3)
    items = held.take_queued(3)
    assert items[:2] == [first, special]
    assert held.run(items) == 1
    assert held.take() is None
    assert first.status is TaskStatus.SUCCEEDED
    assert special.status is TaskStatus.QUEUED
    assert special.attempt == 0
    assert items[2].status is TaskStatus.QUEUED
    if kind == "open breaker":
        # Not even asked: the Python path asks it, once.
        assert app.pool.breakers["guarded"].metrics()["rejected"] == 0
    app.pool._local.extend(items[1:])  # the worker runs them once released


async def test_a_coroutine_that_suspends_is_handed_back_and_finishes_when_awaited(held: Held) -> None:
    task = held.app.submit("yields", 5)
    after = held.app.submit("plain", 6)
    items = held.take_queued(2)
    assert held.run(items) == 0
    rest = held.take()
    assert rest is not None
    assert held.take() is None  # handed over once
    assert task.status is TaskStatus.RUNNING
    assert task.attempt == 1
    assert await rest == {"after": 5}
    assert after.status is TaskStatus.QUEUED
    # The loop records the result itself after awaiting the rest.
    held.app.pool._local.append(after)


async def test_an_error_at_the_first_step_is_raised_where_the_rest_is_awaited(held: Held) -> None:
    task = held.app.submit("raises", 7)
    assert held.run(held.take_queued(1)) == 0
    rest = held.take()
    assert rest is not None
    with pytest.raises(ValueError, match="bad 7") as caught:
        await rest
    # The handler's own frame is in the traceback.
    assert any(frame.name == "raises" for frame in traceback.extract_tb(caught.value.__traceback__))
    assert task.status is TaskStatus.RUNNING


async def test_a_result_that_is_not_json_is_raised_as_a_payload_error(held: Held) -> None:
    held.app.submit("opaque")
    assert held.run(held.take_queued(1)) == 0
    rest = held.take()
    assert rest is not None
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        await rest


async def test_a_task_cancelled_while_queued_is_passed_over(held: Held) -> None:
    cancelled = held.app.submit("plain", 1)
    kept = held.app.submit("plain", 2)
    assert held.app.cancel(cancelled.id)
    items = held.take_queued(2)
    assert held.run(items) == 2
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.attempt == 0
    assert kept.status is TaskStatus.SUCCEEDED
    assert held.seen == [kept.id]


async def test_a_handler_that_returns_another_awaitable_is_handed_back_as_is(held: Held) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()
    rt = held.app.pool._types["plain"]
    rt.direct = lambda payload: future
    held.app.submit("plain", 1)
    assert held.run(held.take_queued(1)) == 0
    assert held.take() is future


async def test_items_that_are_not_task_records_are_left_to_the_python_path(held: Held) -> None:
    task = held.app.submit("plain", 1)
    items = held.take_queued(1)
    assert held.run([*items, "not a task"]) == 1  # type: ignore[list-item]
    assert task.status is TaskStatus.SUCCEEDED


# --- _resumed: the rest of a suspended coroutine --------------------------------------------------


class Step:
    """An awaitable that yields `value` once and returns what is sent back."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


async def two_steps(log: list[Any]) -> str:
    log.append(await Step("first"))
    try:
        log.append(await Step("second"))
    except KeyError as exc:
        log.append(f"caught {exc}")
    log.append(await Step("third"))
    return "done"


def started(log: list[Any]) -> tuple[Any, Any]:
    coro = two_steps(log)
    return coro, coro.send(None)


def test_resumed_relays_sends_throws_and_the_return_value() -> None:
    log: list[Any] = []
    coro, yielded = started(log)
    assert yielded == "first"
    rest = _resumed(coro, yielded)
    assert rest.send(None) == "first"  # the yielded value goes up first
    assert rest.send("a") == "second"  # a value sent in reaches the coroutine
    assert rest.throw(KeyError("k")) == "third"  # an error thrown in reaches it too
    with pytest.raises(StopIteration) as stop:
        rest.send("c")
    assert stop.value.value == "done"
    assert log == ["a", "caught 'k'", "c"]


def test_resumed_throws_into_the_first_wait_and_returns_when_the_coroutine_does() -> None:
    async def catches() -> str:
        try:
            await Step("wait")
        except KeyError:
            return "recovered"
        return "not thrown"

    coro = catches()
    rest = _resumed(coro, coro.send(None))
    assert rest.send(None) == "wait"
    with pytest.raises(StopIteration) as stop:
        rest.throw(KeyError("k"))
    assert stop.value.value == "recovered"


def test_resumed_delegates_after_a_none_send_and_closing_it_closes_the_coroutine() -> None:
    log: list[Any] = []
    coro, yielded = started(log)
    rest = _resumed(coro, yielded)
    assert rest.send(None) == "first"
    assert rest.send(None) == "second"  # asyncio's None: plain delegation from here
    rest.close()
    assert coro.cr_frame is None  # closed, not left suspended
    log2: list[Any] = []
    coro2, yielded2 = started(log2)
    rest2 = _resumed(coro2, yielded2)
    rest2.send(None)
    rest2.close()  # closed at the first wait
    assert coro2.cr_frame is None


def test_resumed_propagates_an_error_the_coroutine_does_not_catch() -> None:
    log: list[Any] = []
    coro, yielded = started(log)
    rest = _resumed(coro, yielded)
    rest.send(None)
    with pytest.raises(RuntimeError, match="boom"):
        rest.throw(RuntimeError("boom"))


# --- a handler cancelling its own task --------------------------------------------------------


@pytest.mark.parametrize("path", ["native", "python"])
@pytest.mark.parametrize("then_await", [False, True])
async def test_a_handler_cancelling_its_own_task_is_cancelled_at_its_next_await(path: str, then_await: bool) -> None:
    # Plain types run natively; a concurrency limit sends them down the Python path.
    app = Hulk(EngineConfig(workers=1, tick_interval=None, seed=0), builtins=False)
    answers: list[bool] = []

    @app.task("self", concurrency=None if path == "native" else 1)
    async def cancels_itself(payload: Any) -> Any:
        answers.append(app.cancel(context.current_task().id))
        if then_await:
            await asyncio.sleep(0)
        return "kept"

    @app.task("next")
    async def after(payload: Any) -> Any:
        await asyncio.sleep(0)
        return payload

    async with app:
        own = app.submit("self")
        following = app.submit("next", 1)
        done = await app.wait(own.id, timeout=10)
        # The worker lives on: the cancellation landed in the attempt that asked for it.
        assert (await app.wait(following.id, timeout=10)).result == 1
        assert app.pool.worker_count == 1
    assert answers == [True]
    if then_await:
        assert done.status is TaskStatus.CANCELLED
        assert done.error is not None
        assert done.error.type == "TaskCancelled"
    else:
        # It returned before any await: the result stands, as for any cancel that never landed.
        assert done.status is TaskStatus.SUCCEEDED
        assert done.result == "kept"


# --- errors inside the runner ----------------------------------------------------------------


def runner_with(clock: Any = None, settle: Any = None) -> TaskRunner:
    from hulk.engine import pool as pool_module

    return TaskRunner(
        task_class=Task,
        current=context.current_task_var,
        clock=clock,
        check_result=pool_module._check_result,
        settle=settle if settle is not None else pool_module._settle,
        resumed=pool_module._resumed,
        raised=pool_module._raised,
    )


async def test_an_error_before_a_task_is_begun_leaves_it_to_the_python_path(held: Held) -> None:
    task = held.app.submit("plain", 1)
    items = held.take_queued(1)
    # A start time that is not finite: the ledger refuses it before touching the task.
    assert held.app.pool._runner.run(items, float("nan")) == 0
    assert held.take() is None
    assert task.status is TaskStatus.QUEUED
    held.app.pool._local.extend(items)


async def test_an_error_once_a_task_is_begun_is_that_attempts_error(held: Held) -> None:
    readings: list[float] = []

    def clock() -> float:
        if readings:  # the second reading, at the end of the attempt
            raise OSError("clock gone")
        readings.append(10.0)
        return 10.0

    runner = runner_with(clock=clock)
    task = held.app.submit("plain", 1)
    assert runner.run(held.take_queued(1), 0.0) == 0
    rest = runner.take()
    assert rest is not None
    assert task.status is TaskStatus.RUNNING
    with pytest.raises(OSError, match="clock gone"):
        await rest


async def test_a_settle_that_raises_leaves_run_and_says_where(held: Held) -> None:
    def settle(task: Task) -> None:
        raise KeyboardInterrupt

    runner = runner_with(settle=settle)
    first = held.app.submit("plain", 1)
    second = held.app.submit("plain", 2)
    items = held.take_queued(2)
    first._delivery = object()
    with pytest.raises(KeyboardInterrupt):
        runner.run(items, 0.0)
    assert runner.position() == 0
    assert first.status is TaskStatus.SUCCEEDED
    assert second.status is TaskStatus.QUEUED
    held.app.pool._local.append(second)


class Boom(BaseException):
    """Not an Exception: `_settle` lets it through."""


class ExplodingDelivery:
    def on_retry(self, task: Task, delay: float) -> None:
        raise AssertionError("no retry expected")

    def on_terminal(self, task: Task) -> None:
        raise Boom


async def test_tasks_after_a_settle_that_raises_go_to_the_other_workers() -> None:
    app = Hulk(EngineConfig(workers=2, tick_interval=None, seed=0), builtins=False)

    @app.task("plain")
    async def plain(payload: Any) -> Any:
        return payload

    async with app:
        workers = [worker.aio for worker in app.pool._workers]
        # Queued before any worker runs: one worker takes all three in one batch.
        first = app.submit_task(Task("plain", 0), ExplodingDelivery())
        rest = [app.submit("plain", n) for n in (1, 2)]
        for task in rest:
            assert (await app.wait(task.id, timeout=10)).status is TaskStatus.SUCCEEDED
        assert first.status is TaskStatus.SUCCEEDED
        assert app.pool.worker_count == 1  # the worker the BaseException went through is gone
        gone = [aio for aio in workers if aio is not None and aio.done()]
        assert len(gone) == 1
        assert isinstance(gone[0].exception(), Boom)
