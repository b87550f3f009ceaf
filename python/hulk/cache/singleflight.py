"""Single-flight: concurrent calls for one key run the work once and share its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs at most one call per key at a time; the callers that arrive meanwhile await its outcome.

    The first caller (the leader) runs the work in its own task. The others await a shielded future,
    so a waiter that is cancelled does not cancel the work. If the leader itself is cancelled, one of
    the waiters takes over and runs the work again; if the work raises, every caller gets the error.
    """

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[T]] = {}
        self.joined = 0
        """How many callers awaited another caller's work instead of running it."""

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    async def do(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """Runs `work()` for `key`, or awaits the run already in flight for it.

        Args:
            key: what identifies the work (calls with equal keys share one run).
            work: makes the awaitable that computes the result.

        Returns:
            The result of the one run.

        Raises:
            Exception: whatever the run raised.
        """
        while (fut := self._calls.get(key)) is not None:
            self.joined += 1
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if fut.cancelled() and (task is None or task.cancelling() == 0):
                    continue  # the leader was cancelled, not us: take over
                raise
        fut = asyncio.get_running_loop().create_future()
        self._calls[key] = fut
        try:
            result = await work()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" report when nobody waited
            raise
        finally:
            if self._calls.get(key) is fut:
                del self._calls[key]
        fut.set_result(result)
        return result
