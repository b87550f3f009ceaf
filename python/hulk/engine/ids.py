"""Sortable unique task ids: UUIDv7 strings (RFC 9562), generated without a per-id random draw.

Layout of an id, ``tttttttt-tttt-7aaa-vbbb-cccccccccccc``: 48 bits of Unix milliseconds, the version
nibble 7, then random bits drawn once per millisecond (``aaa``, ``vbbb``) and a 48-bit counter
(``c``) that starts at a random value (at least 2**44) each millisecond and counts up within it (the "fixed-length
dedicated counter" method of RFC 9562, section 6.2). Ids from one generator therefore sort in
creation order, and ids from different processes collide only if 73 random bits do.

Making one id costs a comparison and one ``hex()`` when the caller passes the time it has already
read, instead of a clock read, a 128-bit random draw and a full format per id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["IdGenerator"]

_COUNTER_MASK = (1 << 48) - 1
_COUNTER_BASE = 1 << 44


class IdGenerator:
    """Makes UUIDv7 strings that sort in creation order.

    Args:
        seed: seeds the random parts (None: from the OS). Fixed seeds and a fake `time_ns` make ids
            reproducible in tests.
        time_ns: wall clock in nanoseconds since the Unix epoch (default `time.time_ns`).
    """

    __slots__ = ("_counter", "_last_ms", "_prefix", "_rng", "_time_ns")

    def __init__(self, *, seed: int | None = None, time_ns: Callable[[], int] = time.time_ns) -> None:
        self._rng = random.Random(seed)
        self._time_ns = time_ns
        self._last_ms = -1
        self._prefix = ""
        self._counter = 0

    def _roll(self, ms: int) -> None:
        # A new millisecond: fresh random bits and a fresh random counter start (leaving 2**47
        # increments of headroom before the 48-bit counter would wrap).
        self._last_ms = ms
        rand_a = self._rng.getrandbits(12)
        rand_b = 0x8000 | self._rng.getrandbits(14)
        stamp = f"{ms & 0xFFFFFFFFFFFF:012x}"
        self._prefix = f"{stamp[:8]}-{stamp[8:]}-7{rand_a:03x}-{rand_b:04x}-"
        # Starting at or above 2**44 keeps the counter at exactly 12 hex digits, so `hex()` (much
        # cheaper than a padded format) gives a fixed-width, sortable suffix.
        self._counter = _COUNTER_BASE + self._rng.getrandbits(46)

    def __call__(self, ms: int | None = None) -> str:
        """Returns a new id, greater than every id this generator returned before.

        Args:
            ms: the current Unix time in milliseconds, when the caller has just read the clock
                (a clock read costs more than the rest of this call); None reads `time_ns`.
        """
        if ms is None:
            ms = self._time_ns() // 1_000_000
        if ms > self._last_ms:
            self._roll(ms)
        else:
            counter = self._counter + 1
            if counter > _COUNTER_MASK:
                # Four billion ids within one millisecond (or a clock that went back): borrow
                # the next millisecond, which keeps ids increasing.
                self._roll(self._last_ms + 1)
            else:
                self._counter = counter
        return self._prefix + hex(self._counter)[2:]
