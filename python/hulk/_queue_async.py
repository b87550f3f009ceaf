"""The asyncio front of the native `BoundedQueue`: await an item without polling.

The consumer registers a one-shot waiter with the queue; the pushing thread (any thread) wakes the
event loop through `call_soon_threadsafe`, so an idle consumer uses no CPU and wakes as soon as the
loop runs the callback. Waking only signals; the item is popped by the consumer itself, so a
cancelled waiter never loses an item.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from hulk.errors import QueueClosed, QueueEmpty

if TYPE_CHECKING:
    from hulk._native import BoundedQueue


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def pop_async(queue: BoundedQueue, timeout: float | None = None) -> Any:
    """Removes the oldest item of `queue`, awaiting one without polling.

    Args:
        queue: the native queue to pop from.
        timeout: seconds to wait at most (None: forever).

    Returns:
        The item (None is a valid item).

    Raises:
        QueueEmpty: still empty after `timeout`.
        QueueClosed: the queue is closed and drained.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        try:
            return queue.try_pop()
        except QueueEmpty:
            if queue.closed:
                raise QueueClosed("queue is closed and drained") from None
        fut: asyncio.Future[None] = loop.create_future()
        if not queue.add_waiter(lambda fut=fut: loop.call_soon_threadsafe(_wake, fut)):
            continue
        if deadline is None:
            await fut
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise QueueEmpty(f"queue still empty after {timeout}s")
        try:
            await asyncio.wait_for(fut, remaining)
        except TimeoutError:
            raise QueueEmpty(f"queue still empty after {timeout}s") from None
