import asyncio

from structlog.testing import capture_logs

from hulk.cache._tasks import stop_task


async def test_a_task_that_swallows_its_cancel_cannot_hang_the_stop() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # what a client library may do with a cancel in flight

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await stop_task(task, timeout=0.05)
    assert [entry["event"] for entry in logs] == ["cache.task_stuck"]
    assert not task.done()
    release.set()
    await task


async def test_a_failed_task_is_reported_and_none_is_fine() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await stop_task(task)
        await stop_task(None)
    assert logs == []  # it had already ended: nothing to stop
    assert isinstance(task.exception(), RuntimeError)

    gate = asyncio.Event()

    async def fails_on_cancel() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await stop_task(task)
    assert [entry["event"] for entry in logs] == ["cache.task_failed"]
