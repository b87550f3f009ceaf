"""A short tour of the native core: `python -m hulk.demo` (or `hulk demo`).

Each structure is used the way the runtime uses it, with no NATS, Redis or HTTP.
"""

from __future__ import annotations

import asyncio
import threading

from hulk.native import (
    BackoffScheduler,
    BoundedQueue,
    CircuitBreaker,
    Counter,
    L1Cache,
    QueueEmpty,
    __version__,
    build_profile,
    pop_async,
)


def _queue() -> None:
    queue = BoundedQueue(4)
    accepted = queue.push_many(range(6))
    print(f"BoundedQueue(4): push_many(6 items) accepted {accepted}; full -> try_push={queue.try_push('x')}")
    print(f"  pop_many(10) -> {queue.pop_many(10)}; stats {queue.stats()}")

    async def consume() -> object:
        threading.Timer(0.05, queue.try_push, args=("from another thread",)).start()
        return await pop_async(queue, timeout=2.0)

    print(f"  asyncio consumer woke with {asyncio.run(consume())!r}")
    try:
        queue.try_pop()
    except QueueEmpty as exc:
        print(f"  try_pop on empty raises {type(exc).__name__}")


def _scheduler() -> None:
    sched = BackoffScheduler(base=0.1, factor=2.0, max_delay=5.0, jitter="none")
    for attempt in (1, 2, 3, 10):
        sched.schedule(f"task-{attempt}", f"retry #{attempt}", attempt, now=0.0)
    print(f"BackoffScheduler: delays 1..4 = {[round(sched.delay(n), 3) for n in (1, 2, 3, 4)]}")
    print(f"  next_due={sched.next_due()}; pop_due(now=0.5) -> {sched.pop_due(now=0.5)}")


def _breaker() -> None:
    breaker = CircuitBreaker(name="payments", window_size=10, minimum_calls=4, wait_open=1.0, half_open_calls=2)
    for _ in range(4):
        if breaker.allow(now=0.0):
            breaker.record_failure(0.01, now=0.0)
    state = breaker.metrics(now=0.0)["state"]
    print(f"CircuitBreaker: after 4 failures at t=0 state={state!r}, allow at t=0.5 -> {breaker.allow(now=0.5)}")
    probe = breaker.allow(now=1.0)
    print(f"  t=1.0: allow -> {probe} (a half-open probe), state={breaker.metrics(now=1.0)['state']!r}")


def _cache() -> None:
    cache = L1Cache(1000, ttl=60.0)
    cache.set("user:1", {"name": "Ada"}, now=0.0)
    cache.set(b"raw", b"\x00\x01", ttl=1.0, now=0.0)
    print(f"L1Cache: get user:1 -> {cache.get('user:1', now=10.0)}; expired raw -> {cache.get(b'raw', now=5.0)}")
    print(f"  stats {cache.stats()}")


def main() -> None:
    """Runs the tour."""
    print(f"hulk {__version__} ({build_profile} build)")
    _queue()
    _scheduler()
    _breaker()
    _cache()
    tasks = Counter()
    tasks.inc(3)
    print(f"Counter: {tasks!r}")


if __name__ == "__main__":
    main()
