import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hulk.cache.singleflight import SingleFlight


async def test_concurrent_calls_run_the_work_once() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        return 42

    calls = [asyncio.create_task(flight.do("k", work)) for _ in range(100)]
    await asyncio.sleep(0)
    assert "k" in flight
    assert len(flight) == 1
    release.set()
    assert await asyncio.gather(*calls) == [42] * 100
    assert runs == 1
    assert flight.joined == 99
    assert len(flight) == 0


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def work(key: str) -> str:
        await asyncio.sleep(0)
        return key

    def job(key: str) -> Callable[[], Awaitable[str]]:
        return lambda: work(key)

    results = await asyncio.gather(*(flight.do(k, job(k)) for k in ("a", "b", "a")))
    assert results == ["a", "b", "a"]


async def test_every_caller_gets_the_error() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        raise RuntimeError("boom")

    calls = [asyncio.create_task(flight.do("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(flight) == 0


async def test_an_error_with_no_waiters_is_not_reported_as_unretrieved() -> None:
    flight: SingleFlight[int] = SingleFlight()

    async def work() -> int:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await flight.do("k", work)


async def test_cancelled_waiter_does_not_cancel_the_work() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    leader = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await leader == 7


async def test_a_waiter_takes_over_when_the_leader_is_cancelled() -> None:
    flight: SingleFlight[int] = SingleFlight()
    first_started = asyncio.Event()
    never = asyncio.Event()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            first_started.set()
            await never.wait()
        return runs

    leader = asyncio.create_task(flight.do("k", work))
    await first_started.wait()
    waiter = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await waiter == 2
    assert runs == 2
