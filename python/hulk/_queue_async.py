"""The asyncio front of the native `BoundedQueue`: await an item without polling.

The consumers of one queue in one event loop share one native waiter: the first to find the queue
empty registers it with `add_waiter`, and the pushing thread (any thread) wakes the loop through
`call_soon_threadsafe`. The loop wakes one waiting consumer, which pops by itself and hands the turn
on while items remain, as `asyncio.Queue` does. So an idle consumer uses no CPU, a push wakes one
consumer rather than every one, the queue holds at most one callback per loop however many waits
time out, and a consumer cancelled while awaiting never loses an item: it had popped nothing, and
if it had been woken it hands its turn on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from hulk.errors import QueueClosed, QueueEmpty

if TYPE_CHECKING:
    from hulk._native import BoundedQueue


class _LoopWaiters:
    """The consumers of one queue waiting in one event loop, and that loop's native registration.

    Used only from the loop's thread, except `_on_push`, which runs on the pushing thread.
    """

    __slots__ = ("_queue", "armed", "futures", "loop")

    def __init__(self, queue: BoundedQueue, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: while armed, the queue holds our callback, and the native queue takes no part in
        # cycle collection, so a strong reference back would keep both alive forever.
        self._queue = weakref.ref(queue)
        self.loop = loop
        self.futures: deque[asyncio.Future[None]] = deque()
        self.armed = False

    def arm(self, queue: BoundedQueue) -> bool:
        """Makes sure a native waiter is registered; False when the queue is non-empty or closed."""
        if not self.armed:
            self.armed = queue.add_waiter(self._on_push)
        return self.armed

    def _on_push(self) -> None:
        # A closed loop raises RuntimeError: nobody can be waiting in it any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._on_wake)

    def _on_wake(self) -> None:
        self.armed = False
        queue = self._queue()
        if queue is None or queue.closed:
            self.wake_all()
        else:
            self.wake_next()

    def wake_next(self) -> None:
        """Gives the turn to the longest-waiting consumer still waiting."""
        while self.futures:
            fut = self.futures.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_all(self) -> None:
        """Wakes every waiting consumer (the queue closed)."""
        while self.futures:
            fut = self.futures.popleft()
            if not fut.done():
                fut.set_result(None)

    def leave(self, fut: asyncio.Future[None]) -> None:
        """Removes a consumer that stops waiting, handing its turn on if it had been woken."""
        if fut.done() and not fut.cancelled():
            self.wake_next()
            return
        fut.cancel()
        with contextlib.suppress(ValueError):
            self.futures.remove(fut)

    def hand_on(self, queue: BoundedQueue) -> None:
        """After a woken consumer popped: wakes the next one if items remain, else re-arms."""
        if self.futures and (len(queue) > 0 or not self.arm(queue)):
            self.wake_next()


_registry: weakref.WeakKeyDictionary[BoundedQueue, dict[asyncio.AbstractEventLoop, _LoopWaiters]]
_registry = weakref.WeakKeyDictionary()


def _waiters_of(queue: BoundedQueue, loop: asyncio.AbstractEventLoop) -> _LoopWaiters:
    by_loop = _registry.setdefault(queue, {})
    waiters = by_loop.get(loop)
    if waiters is None:
        for gone in [other for other in by_loop if other.is_closed()]:
            del by_loop[gone]
        waiters = by_loop.setdefault(loop, _LoopWaiters(queue, loop))
    return waiters


async def pop_async(queue: BoundedQueue, timeout: float | None = None) -> Any:
    """Removes the oldest item of `queue`, awaiting one without polling.

    Pushes from any thread wake the waiting consumer. Cancelling the await loses no item.

    Args:
        queue: the native queue to pop from.
        timeout: seconds to wait at most (None: forever).

    Returns:
        The item (None is a valid item).

    Raises:
        QueueEmpty: still empty after `timeout`.
        QueueClosed: the queue is closed and drained.
        ValueError: `timeout` is negative, NaN or infinite.
    """
    if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(f"pop_async(timeout) must be a finite number of seconds >= 0, got {timeout}")
    try:
        return queue.try_pop()
    except QueueEmpty:
        if timeout == 0:
            raise
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    waiters = _waiters_of(queue, loop)
    while True:
        woken = False
        fut = loop.create_future()
        waiters.futures.append(fut)
        if waiters.arm(queue):
            try:
                if deadline is None:
                    await fut
                else:
                    async with asyncio.timeout_at(deadline):
                        await fut
                woken = True
            except TimeoutError:
                # Past the deadline: one last try below, like the blocking pop. A turn given to us
                # meanwhile is handed on by `leave`.
                waiters.leave(fut)
            except BaseException:
                waiters.leave(fut)
                raise
        else:
            # An item (or close) came since our pop: pop again, giving up our place in line.
            waiters.leave(fut)
        try:
            item = queue.try_pop()
        except QueueEmpty:
            if deadline is not None and loop.time() >= deadline:
                raise QueueEmpty(f"queue still empty after {timeout}s") from None
            continue
        except QueueClosed:
            waiters.wake_all()
            raise
        if woken:
            waiters.hand_on(queue)
        return item
