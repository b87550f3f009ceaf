"""TEMPORARY pure-Python stand-ins for native classes not merged yet (BackoffScheduler, CircuitBreaker).

Installed into `hulk._native` by conftest.py only when the native class is missing; removed once the
native classes land on main.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from typing import Any

from hulk._native import monotonic
from hulk.errors import BreakerOpen


class BackoffScheduler:
    def __init__(
        self, *, base: float, factor: float = 2.0, max_delay: float, jitter: str = "full", seed: int | None = None
    ) -> None:
        self.base, self.factor, self.max_delay, self.jitter = base, factor, max_delay, jitter
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, str]] = []
        self._items: dict[str, tuple[float, int, Any]] = {}
        self._seq = 0
        self._prev: dict[str, float] = {}

    def delay(self, attempt: int) -> float:
        d = min(self.max_delay, self.base * self.factor ** (attempt - 1))
        if self.jitter == "full":
            return self._rng.uniform(0, d)
        if self.jitter == "equal":
            return d / 2 + self._rng.uniform(0, d / 2)
        return d

    def schedule(self, key: str, item: object, attempt: int, now: float | None = None) -> float:
        now = monotonic() if now is None else now
        due = now + self.delay(attempt)
        self.schedule_at(key, item, due)
        return due

    def schedule_at(self, key: str, item: object, due: float) -> None:
        self._seq += 1
        self._items[key] = (due, self._seq, item)
        heapq.heappush(self._heap, (due, self._seq, key))

    def cancel(self, key: str) -> bool:
        return self._items.pop(key, None) is not None

    def _clean(self) -> None:
        while self._heap:
            _due, seq, key = self._heap[0]
            entry = self._items.get(key)
            if entry is not None and entry[1] == seq:
                return
            heapq.heappop(self._heap)

    def pop_due(self, now: float | None = None, max_items: int = 1024) -> list[Any]:
        now = monotonic() if now is None else now
        out: list[Any] = []
        while len(out) < max_items:
            self._clean()
            if not self._heap or self._heap[0][0] > now:
                break
            _due, _seq, key = heapq.heappop(self._heap)
            out.append(self._items.pop(key)[2])
        return out

    def next_due(self) -> float | None:
        self._clean()
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


class CircuitBreaker:
    def __init__(
        self,
        *,
        name: str = "default",
        failure_rate_threshold: float = 50.0,
        slow_call_rate_threshold: float = 100.0,
        slow_call_duration: float = 60.0,
        window_type: str = "count",
        window_size: int = 100,
        minimum_calls: int = 100,
        wait_open: float = 60.0,
        jitter: float = 0.0,
        half_open_calls: int = 10,
        bucket_width: float = 1.0,
        failure_count_threshold: int | None = None,
        seed: int | None = None,
    ) -> None:
        self._name = name
        self.threshold = failure_rate_threshold
        self.window: deque[bool] = deque(maxlen=window_size)
        self.minimum = min(minimum_calls, window_size)
        self.wait_open = wait_open
        self.half_open_calls = half_open_calls
        self.count_threshold = failure_count_threshold
        self._state = "closed"
        self._opened_at = 0.0
        self._probes = 0
        self._probe_results: list[bool] = []
        self.rejected = 0
        self.calls = 0
        self.failures = 0

    @property
    def name(self) -> str:
        return self._name

    def _tick(self, now: float) -> None:
        if self._state == "open" and now >= self._opened_at + self.wait_open:
            self._state = "half_open"
            self._probes = 0
            self._probe_results = []

    @property
    def state(self) -> str:
        self._tick(monotonic())
        return self._state

    def allow(self, now: float | None = None) -> bool:
        now = monotonic() if now is None else now
        self._tick(now)
        if self._state == "closed":
            return True
        if self._state == "half_open" and self._probes < self.half_open_calls:
            self._probes += 1
            return True
        self.rejected += 1
        return False

    def acquire(self, now: float | None = None) -> None:
        if not self.allow(now):
            err = BreakerOpen("open")
            err.retry_after = self.retry_after(now)
            raise err

    def retry_after(self, now: float | None = None) -> float:
        now = monotonic() if now is None else now
        self._tick(now)
        return max(0.0, self._opened_at + self.wait_open - now) if self._state == "open" else 0.0

    def _open(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now
        self.window.clear()

    def _record(self, ok: bool, now: float | None) -> None:
        now = monotonic() if now is None else now
        self.calls += 1
        self.failures += not ok
        if self._state == "half_open":
            self._probe_results.append(ok)
            if len(self._probe_results) >= self.half_open_calls:
                rate = 100.0 * self._probe_results.count(False) / len(self._probe_results)
                if rate >= self.threshold:
                    self._open(now)
                else:
                    self._state = "closed"
                    self.window.clear()
            return
        self.window.append(ok)
        fails = self.window.count(False)
        by_count = self.count_threshold is not None and fails >= self.count_threshold
        by_rate = len(self.window) >= self.minimum and 100.0 * fails / len(self.window) >= self.threshold
        if by_count or by_rate:
            self._open(now)

    def record_success(self, duration: float, now: float | None = None) -> None:
        self._record(True, now)

    def record_failure(self, duration: float, now: float | None = None) -> None:
        self._record(False, now)

    def release(self, now: float | None = None) -> None:
        if self._state == "half_open" and self._probes > 0:
            self._probes -= 1

    def metrics(self, now: float | None = None) -> dict[str, Any]:
        self._tick(monotonic() if now is None else now)
        return {
            "state": self._state,
            "failure_rate": 0.0,
            "slow_call_rate": 0.0,
            "calls": self.calls,
            "failures": self.failures,
            "slow_calls": 0,
            "rejected": self.rejected,
        }

    def reset(self) -> None:
        self._state = "closed"
        self.window.clear()

    def force_open(self, now: float | None = None) -> None:
        self._open(monotonic() if now is None else now)
