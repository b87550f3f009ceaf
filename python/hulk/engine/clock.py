"""The engine's clock: monotonic seconds for deadlines and durations, wall seconds for timestamps.

The engine reads time only through a `Clock`, so tests inject `hulk.testing.FakeClock` and get
reproducible deadlines, retry times and timestamps. A clock read costs a system call's worth of
time on some machines, so the engine reads the monotonic clock once per transition at most and
derives wall time from it with `wall_offset`.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time for the engine."""

    def monotonic(self) -> float:
        """Monotonic seconds (the same scale the native classes take as `now`)."""
        ...

    def wall_offset(self) -> float:
        """Seconds to add to a `monotonic()` reading to get Unix time (read again now and then)."""
        ...


class SystemClock:
    """The real clock: `time.monotonic` (the native core's scale) and `time.time`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Monotonic seconds from `time.monotonic()`."""
        return time.monotonic()

    def wall_offset(self) -> float:
        """The current difference between `time.time()` and `time.monotonic()`."""
        return time.time() - time.monotonic()
