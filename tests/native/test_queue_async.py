"""pop_async: the asyncio front of BoundedQueue (no polling, wake-ups from any thread, cancellation)."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Callable

import pytest
import uvloop

from hulk import _queue_async
from hulk._native import BoundedQueue
from hulk._queue_async import pop_async
from hulk.errors import QueueClosed, QueueEmpty

SAFETY = 30.0  # a bound against a hang, never a measurement


def in_thread(target: Callable[[], object]) -> None:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(SAFETY)
    assert not thread.is_alive()


def waiting(q: BoundedQueue) -> int:
    """How many consumers of this loop are waiting on `q`."""
    by_loop = _queue_async._registry.get(q, {})
    waiters = by_loop.get(asyncio.get_running_loop())
    return 0 if waiters is None else sum(not fut.done() for fut in waiters.futures)


async def until_waiting(q: BoundedQueue, n: int) -> None:
    """Lets the loop run until `n` consumers wait on `q` (a condition, not a delay)."""
    for _ in range(1000):
        if waiting(q) >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{n} consumers never started waiting")


async def test_returns_an_available_item_at_once() -> None:
    q = BoundedQueue(2)
    q.push_many([None, "b"])
    assert await pop_async(q) is None
    assert await pop_async(q, timeout=0) == "b"


async def test_wakes_on_a_push_from_another_thread_without_polling() -> None:
    q = BoundedQueue(1)
    consumer = asyncio.create_task(pop_async(q))
    await until_waiting(q, 1)
    # Waiting leaves nothing for the loop to run: no timer, no ready callback (no polling).
    loop = asyncio.get_running_loop()
    assert not vars(loop)["_scheduled"]
    assert not vars(loop)["_ready"]
    in_thread(lambda: q.push("x"))
    assert await asyncio.wait_for(consumer, SAFETY) == "x"


async def test_timeouts_raise_queue_empty_and_leave_one_registration() -> None:
    q = BoundedQueue(1)
    with pytest.raises(QueueEmpty):
        await pop_async(q, timeout=0)
    for _ in range(20):
        with pytest.raises(QueueEmpty):
            await pop_async(q, timeout=0.001)
    assert waiting(q) == 0
    loop_waiters = _queue_async._registry[q][asyncio.get_running_loop()]
    assert len(loop_waiters.futures) == 0
    assert loop_waiters.armed
    q.push("late")
    assert await pop_async(q, timeout=SAFETY) == "late"


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf])
async def test_bad_timeout_raises_value_error(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await pop_async(BoundedQueue(1), timeout=timeout)


async def test_a_cancelled_waiter_loses_no_item() -> None:
    q = BoundedQueue(1)
    consumer = asyncio.create_task(pop_async(q))
    await until_waiting(q, 1)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    q.push("kept")
    assert q.try_pop() == "kept"


async def test_a_woken_then_cancelled_waiter_hands_its_turn_on() -> None:
    q = BoundedQueue(1)
    first = asyncio.create_task(pop_async(q))
    await until_waiting(q, 1)
    second = asyncio.create_task(pop_async(q))
    await until_waiting(q, 2)
    q.push("item")
    # Let the wake-up reach the first consumer, then cancel it before it runs.
    while waiting(q) == 2:  # noqa: ASYNC110 - a condition on the loop's own state, not a delay
        await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.wait_for(second, SAFETY) == "item"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_one_batch_reaches_every_waiting_consumer() -> None:
    q = BoundedQueue(8)
    consumers = [asyncio.create_task(pop_async(q)) for _ in range(5)]
    await until_waiting(q, 5)
    in_thread(lambda: q.push_many(range(5)))
    assert sorted(await asyncio.wait_for(asyncio.gather(*consumers), SAFETY)) == [0, 1, 2, 3, 4]


async def test_close_wakes_every_waiting_consumer() -> None:
    q = BoundedQueue(4)
    consumers = [asyncio.create_task(pop_async(q)) for _ in range(3)]
    await until_waiting(q, 3)
    in_thread(q.close)
    results = await asyncio.wait_for(asyncio.gather(*consumers, return_exceptions=True), SAFETY)
    assert all(isinstance(r, QueueClosed) for r in results)


async def test_items_left_at_close_are_still_delivered() -> None:
    q = BoundedQueue(4)
    q.push_many(["a", "b"])
    q.close()
    assert [await pop_async(q), await pop_async(q)] == ["a", "b"]
    with pytest.raises(QueueClosed):
        await pop_async(q)


async def test_cancellations_and_timeouts_under_load_lose_nothing() -> None:
    total = 3_000
    q = BoundedQueue(4)
    rng = random.Random(7)
    delivered: list[int] = []

    async def consume() -> None:
        while True:
            try:
                delivered.append(await pop_async(q, timeout=rng.choice([None, 0.0005, 0.005])))
            except QueueEmpty:
                continue
            except QueueClosed:
                return

    def produce(start: int) -> None:
        for i in range(start, total, 3):
            q.push(i)

    consumers = [asyncio.create_task(consume()) for _ in range(6)]
    producers = [threading.Thread(target=produce, args=(s,)) for s in range(3)]
    for thread in producers:
        thread.start()
    # Cancel consumers at random and replace them while items flow.
    while any(thread.is_alive() for thread in producers):
        await asyncio.sleep(0)
        victim = rng.randrange(len(consumers))
        if rng.random() < 0.05:
            consumers[victim].cancel()
            consumers[victim] = asyncio.create_task(consume())
    for thread in producers:
        thread.join(SAFETY)
    q.close()
    await asyncio.wait_for(asyncio.gather(*consumers, return_exceptions=True), SAFETY)
    leftover = []
    while len(q):
        leftover.append(q.try_pop())
    assert sorted(delivered + leftover) == list(range(total))


def test_works_under_uvloop() -> None:
    async def main() -> list[object]:
        q = BoundedQueue(2)
        consumer = asyncio.create_task(pop_async(q))
        await until_waiting(q, 1)
        in_thread(lambda: q.push_many(["x", "y"]))
        return [await asyncio.wait_for(consumer, SAFETY), await pop_async(q)]

    assert uvloop.run(main()) == ["x", "y"]


def test_a_registration_left_by_a_closed_loop_is_harmless() -> None:
    q = BoundedQueue(1)

    async def time_out() -> None:
        with pytest.raises(QueueEmpty):
            await pop_async(q, timeout=0.001)

    async def pop() -> object:
        return await pop_async(q, timeout=SAFETY)

    asyncio.run(time_out())  # leaves that loop's registration armed, then closes the loop
    assert q.try_push("x")  # which runs the registration against a closed loop, silently
    assert asyncio.run(pop()) == "x"
    asyncio.run(time_out())
    assert len(_queue_async._registry[q]) == 1, "closed loops are forgotten"
