"""The native core of hulk, for use from any Python code with no NATS, Redis or HTTP.

Explicit re-exports of the compiled module `hulk._native` (see `_native.pyi` for the full API and
which calls release the GIL), plus the asyncio front of the queue.

Example:
    >>> from hulk.native import BoundedQueue
    >>> q = BoundedQueue(2)
    >>> q.try_push("a")
    True
"""

from hulk._native import (
    BackoffScheduler,
    BoundedQueue,
    CircuitBreaker,
    Counter,
    Histogram,
    L1Cache,
    __version__,
    build_profile,
    monotonic,
)
from hulk._queue_async import pop_async
from hulk.errors import BreakerOpen, HulkError, QueueClosed, QueueEmpty, QueueFull

__all__ = [
    "BackoffScheduler",
    "BoundedQueue",
    "BreakerOpen",
    "CircuitBreaker",
    "Counter",
    "Histogram",
    "HulkError",
    "L1Cache",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "__version__",
    "build_profile",
    "monotonic",
    "pop_async",
]
