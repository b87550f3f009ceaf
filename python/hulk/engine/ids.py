"""Sortable unique task ids: UUIDv7 strings (RFC 9562), made in batches.

Layout of an id, ``tttttttt-tttt-7aaa-vbbb-cccccccccccc``: 48 bits of Unix milliseconds, the version
nibble 7, random bits drawn once per batch (``aaa``, ``vbbb``) and a 48-bit counter (``c``) that
starts at a random value (at least 2**44, so it always prints as 12 hex digits) and counts up (the
"fixed-length dedicated counter" method of RFC 9562, section 6.2). Ids from one generator sort in
creation order; ids from different processes collide only if 72 random bits do.

Formatting a UUID costs more than everything else the engine does to accept a task, so ids come in
blocks of 256 that share everything but their last two hex digits: a block costs one format, and
each id one string concatenation, made on demand by a C-level `map` iterator. A block is replaced
when its timestamp is older than `max_age` seconds, so the embedded time stays within a few
milliseconds of the real creation time (the unused ids of an old block are never made).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

__all__ = ["IdGenerator"]

_COUNTER_MAX = (1 << 48) - 1
_COUNTER_BASE = 1 << 44
_BLOCK = 256
# The last two hex digits of the ids of one block, in increasing order.
_SUFFIXES = [f"{n:02x}" for n in range(_BLOCK)]


class IdGenerator:
    """Makes UUIDv7 strings that sort in creation order.

    Args:
        seed: seeds the random parts (None: from the OS). Fixed seeds and a fake `time_ns` make ids
            reproducible in tests.
        time_ns: wall clock in nanoseconds since the Unix epoch (default `time.time_ns`).
        max_age: seconds after which a block's timestamp is stale and a new block is made.
    """

    __slots__ = ("_counter", "_expires", "_head", "_ids", "_last_ms", "_max_age", "_prefix", "_rng", "_time_ns")

    def __init__(
        self,
        *,
        seed: int | None = None,
        time_ns: Callable[[], int] = time.time_ns,
        max_age: float = 0.002,
    ) -> None:
        self._rng = random.Random(seed)
        self._time_ns = time_ns
        self._max_age = max_age
        self._last_ms = -1
        self._prefix = ""
        self._head = ""
        self._counter = 0
        self._ids: Iterator[str] = iter(())
        self._expires = 0.0

    def _roll(self, ms: int) -> None:
        # A new millisecond: fresh random bits and a fresh random counter start (a block boundary).
        self._last_ms = ms
        rand_a = self._rng.getrandbits(12)
        rand_b = 0x8000 | self._rng.getrandbits(14)
        stamp = f"{ms & 0xFFFFFFFFFFFF:012x}"
        self._prefix = f"{stamp[:8]}-{stamp[8:]}-7{rand_a:03x}-{rand_b:04x}-"
        self._counter = _COUNTER_BASE + (self._rng.getrandbits(46) & ~(_BLOCK - 1)) - _BLOCK

    def _refill(self, ms: int) -> None:
        if ms > self._last_ms:
            self._roll(ms)
        elif self._counter + 2 * _BLOCK > _COUNTER_MAX:
            # Counter exhausted within one millisecond (or a clock that went back): borrow the next
            # millisecond, which keeps ids increasing.
            self._roll(self._last_ms + 1)
        self._counter += _BLOCK
        head = self._head = f"{self._prefix}{self._counter >> 8:010x}"
        self._ids = map(head.__add__, _SUFFIXES)

    def __call__(self, ms: int | None = None) -> str:
        """Returns one new id, greater than every id this generator returned before.

        Args:
            ms: the current Unix time in milliseconds (None: read `time_ns`).
        """
        if ms is None:
            ms = self._time_ns() // 1_000_000
        if ms > self._last_ms:
            self._refill(ms)
        new = next(self._ids, None)
        if new is None:
            self._refill(ms)
            new = next(self._ids)
        return new

    def block(self, wall: float) -> tuple[str, float]:
        """Starts a new block of ids; returns what its ids share and the Unix time it expires.

        The block's ids are the returned head (34 characters) followed by two lowercase hex
        digits, "00" to "ff", in that order. For a consumer that makes the ids itself (the
        engine's native `IdStream`): use them until they run out or `wall` reaches the expiry,
        then ask for a new block. Give a generator to one consumer only: ids taken through
        `next` or a call meanwhile come from a newer block and would sort after later ones.

        Args:
            wall: the current Unix time in seconds.
        """
        self._refill(int(wall * 1000))
        self._expires = wall + self._max_age
        return self._head, self._expires

    def next(self, wall: float) -> str:
        """Returns one new id from the current block (the engine's hot path).

        Args:
            wall: the current Unix time in seconds, already read by the caller.
        """
        if wall < self._expires:
            new = next(self._ids, None)
            if new is not None:
                return new
        self._refill(int(wall * 1000))
        self._expires = wall + self._max_age
        return next(self._ids)
