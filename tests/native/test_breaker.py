"""CircuitBreaker: resilience4j's semantics, checked against a pure-Python reference model.

Every test drives time through `now`; `metrics(now)["state"]` is read instead of the `state`
property, which uses the real clock.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hulk._native import BreakerOpen, CircuitBreaker, HulkError

# --- reference model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cfg:
    """The subset of settings the model needs (the rest keep their defaults in both)."""

    window_type: Literal["count", "time"]
    window_size: int
    minimum_calls: int
    failure_rate_threshold: float
    slow_call_rate_threshold: float
    slow_call_duration: float
    wait_open: float
    jitter: float
    half_open_calls: int
    bucket_width: float
    failure_count_threshold: int | None

    def kwargs(self) -> dict[str, Any]:
        return {
            "window_type": self.window_type,
            "window_size": self.window_size,
            "minimum_calls": self.minimum_calls,
            "failure_rate_threshold": self.failure_rate_threshold,
            "slow_call_rate_threshold": self.slow_call_rate_threshold,
            "slow_call_duration": self.slow_call_duration,
            "wait_open": self.wait_open,
            "jitter": self.jitter,
            "half_open_calls": self.half_open_calls,
            "bucket_width": self.bucket_width,
            "failure_count_threshold": self.failure_count_threshold,
        }


Outcome = tuple[bool, bool]  # (failed, slow)


class Model:
    """resilience4j's CircuitBreaker as its documentation describes it, written plainly.

    CLOSED: outcomes go into a sliding window (the last N calls, or the calls whose second-bucket
    lies in the last N buckets); once the window holds the minimum number of calls (for count
    windows min(minimum_calls, window_size)), a failure or slow-call rate >= its threshold opens the
    breaker; so do `failure_count_threshold` failures. OPEN rejects calls until its wait has passed,
    then becomes HALF_OPEN on the next call. HALF_OPEN permits `half_open_calls` probes and decides
    on their rates once all have reported: OPEN again, or CLOSED with an empty window. Outcomes
    arriving while OPEN are dropped.
    """

    def __init__(self, cfg: Cfg) -> None:
        self.cfg = cfg
        self.state = "closed"
        self.count_window: deque[Outcome] = deque(maxlen=cfg.window_size)
        # Time window: every record with its bucket epoch; the window is the last n epochs.
        self.time_records: list[tuple[int, bool, bool]] = []
        self.head: int | None = None
        self.n_buckets = math.ceil(cfg.window_size / cfg.bucket_width)
        self.probes: list[Outcome] = []
        self.in_flight = 0
        self.open_until = 0.0
        self.rejected = 0

    @property
    def min_calls(self) -> int:
        if self.cfg.window_type == "count":
            return min(self.cfg.minimum_calls, self.cfg.window_size)
        return self.cfg.minimum_calls

    def _epoch(self, now: float) -> int:
        epoch = math.floor(now / self.cfg.bucket_width)
        self.head = epoch if self.head is None else max(self.head, epoch)
        return self.head

    def window(self, now: float) -> list[Outcome]:
        if self.cfg.window_type == "count":
            return list(self.count_window)
        head = self._epoch(now)
        return [(f, s) for e, f, s in self.time_records if head - self.n_buckets < e <= head]

    @staticmethod
    def rates(outcomes: list[Outcome], minimum: int) -> tuple[float, float]:
        calls = len(outcomes)
        if calls < minimum or calls == 0:
            return -1.0, -1.0
        failures = sum(1 for f, _ in outcomes if f)
        slow = sum(1 for _, s in outcomes if s)
        return failures * 100.0 / calls, slow * 100.0 / calls

    def above(self, outcomes: list[Outcome], minimum: int) -> bool:
        fr, sr = self.rates(outcomes, minimum)
        return fr >= 0 and (fr >= self.cfg.failure_rate_threshold or sr >= self.cfg.slow_call_rate_threshold)

    def tick(self, now: float) -> None:
        if self.state == "open" and now >= self.open_until:
            self.state = "half_open"
            self.probes = []
            self.in_flight = 0

    def trip(self, now: float, wait: float) -> None:
        self.state = "open"
        self.open_until = now + wait

    def close(self) -> None:
        self.state = "closed"
        self.count_window.clear()
        self.time_records = []

    def allow(self, now: float) -> bool:
        self.tick(now)
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.in_flight + len(self.probes) < self.cfg.half_open_calls:
            self.in_flight += 1
            return True
        self.rejected += 1
        return False

    def record(self, failed: bool, duration: float, now: float) -> bool:
        """Records an outcome; True when it trips the breaker (the caller supplies the wait)."""
        self.tick(now)
        slow = duration > self.cfg.slow_call_duration
        if self.state == "closed":
            if self.cfg.window_type == "count":
                self.count_window.append((failed, slow))
            else:
                self.time_records.append((self._epoch(now), failed, slow))
            outcomes = self.window(now)
            failures = sum(1 for f, _ in outcomes if f)
            fct = self.cfg.failure_count_threshold
            return (fct is not None and failures >= fct) or self.above(outcomes, self.min_calls)
        if self.state == "half_open":
            self.in_flight = max(0, self.in_flight - 1)
            self.probes.append((failed, slow))
            if len(self.probes) >= self.cfg.half_open_calls:
                if self.above(self.probes, self.cfg.half_open_calls):
                    return True
                self.close()
        return False

    def release(self, now: float) -> None:
        self.tick(now)
        if self.state == "half_open":
            self.in_flight = max(0, self.in_flight - 1)

    def retry_after(self, now: float) -> float:
        self.tick(now)
        return max(0.0, self.open_until - now) if self.state == "open" else 0.0

    def metrics(self, now: float) -> dict[str, Any]:
        self.tick(now)
        if self.state == "half_open":
            outcomes, minimum = self.probes, self.cfg.half_open_calls
        else:
            outcomes, minimum = self.window(now), self.min_calls
        fr, sr = self.rates(outcomes, minimum)
        return {
            "state": self.state,
            "failure_rate": fr,
            "slow_call_rate": sr,
            "calls": len(outcomes),
            "failures": sum(1 for f, _ in outcomes if f),
            "slow_calls": sum(1 for _, s in outcomes if s),
            "rejected": self.rejected,
        }

    def reset(self) -> None:
        self.close()
        self.probes = []
        self.in_flight = 0
        self.rejected = 0


# --- stateful comparison -------------------------------------------------------------------------

# Durations and time steps on a coarse grid so equality boundaries (duration == slow_call_duration,
# now == open_until, now on a bucket edge) come up often.
durations = st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0])
steps = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 5.0])


def configs(window_type: Literal["count", "time"]) -> st.SearchStrategy[Cfg]:
    return st.builds(
        Cfg,
        window_type=st.just(window_type),
        window_size=st.integers(1, 8),
        minimum_calls=st.integers(1, 10),
        failure_rate_threshold=st.sampled_from([25.0, 50.0, 100.0 / 3.0, 60.0, 100.0]),
        slow_call_rate_threshold=st.sampled_from([50.0, 100.0]),
        slow_call_duration=st.sampled_from([0.0, 1.0]),
        wait_open=st.sampled_from([0.0, 1.0, 3.0]),
        jitter=st.sampled_from([0.0, 0.0, 0.5]),
        half_open_calls=st.integers(1, 4),
        bucket_width=st.sampled_from([0.5, 1.0]) if window_type == "time" else st.just(1.0),
        failure_count_threshold=st.none() | st.integers(1, 4),
    )


@settings(max_examples=100, stateful_step_count=50, deadline=None)
class BreakerMachine(RuleBasedStateMachine):
    """Runs the same calls on the native breaker and the model; their answers must agree."""

    window_type: Literal["count", "time"] = "count"

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.cfg: Cfg | None = None
        self.model: Model | None = None
        self.sut: CircuitBreaker | None = None

    def _both(self) -> tuple[Model, CircuitBreaker, Cfg]:
        assert self.model is not None
        assert self.sut is not None
        assert self.cfg is not None
        return self.model, self.sut, self.cfg

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        self.cfg = data.draw(configs(self.window_type))
        self.model = Model(self.cfg)
        self.sut = CircuitBreaker(name="m", seed=data.draw(st.integers(0, 2**64 - 1)), **self.cfg.kwargs())

    def _after_trip(self, now: float) -> None:
        """The model opens with the wait the breaker drew, after checking it is in bounds."""
        model, sut, cfg = self._both()
        wait = sut.retry_after(now=now) if cfg.wait_open > 0 else 0.0
        assert cfg.wait_open - 1e-9 <= wait <= cfg.wait_open * (1 + cfg.jitter) + 1e-9
        model.trip(now, wait)
        model.tick(now)

    @rule(dt=steps)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def allow(self) -> None:
        model, sut, _ = self._both()
        assert sut.allow(now=self.now) == model.allow(self.now)

    @rule(failed=st.booleans(), duration=durations)
    def record(self, failed: bool, duration: float) -> None:
        model, sut, _ = self._both()
        if failed:
            sut.record_failure(duration, now=self.now)
        else:
            sut.record_success(duration, now=self.now)
        if model.record(failed, duration, self.now):
            self._after_trip(self.now)

    @rule(failed=st.booleans(), duration=durations)
    def permitted_call(self, failed: bool, duration: float) -> None:
        """The usual pattern: ask, and report only when allowed."""
        model, sut, _ = self._both()
        ok = sut.allow(now=self.now)
        assert ok == model.allow(self.now)
        if ok:
            self.record(failed, duration)

    @rule()
    def release(self) -> None:
        model, sut, _ = self._both()
        sut.release(now=self.now)
        model.release(self.now)

    @rule()
    def force_open(self) -> None:
        _, sut, _ = self._both()
        sut.force_open(now=self.now)
        self._after_trip(self.now)

    @rule()
    def reset(self) -> None:
        model, sut, _ = self._both()
        sut.reset()
        model.reset()

    @rule()
    def retry_after(self) -> None:
        model, sut, _ = self._both()
        assert sut.retry_after(now=self.now) == pytest.approx(model.retry_after(self.now), abs=1e-9)

    @invariant()
    def metrics_agree(self) -> None:
        if self.model is None:
            return
        model, sut, _ = self._both()
        assert sut.metrics(now=self.now) == model.metrics(self.now)


class TimeBreakerMachine(BreakerMachine):
    window_type = "time"


TestCountWindowAgainstModel = BreakerMachine.TestCase
TestTimeWindowAgainstModel = TimeBreakerMachine.TestCase


# --- targeted tests ------------------------------------------------------------------------------


def tripped(**kwargs: Any) -> CircuitBreaker:
    """A count-window breaker opened at t=0 by one failure (window 1, minimum 1)."""
    b = CircuitBreaker(window_size=1, minimum_calls=1, **kwargs)
    b.record_failure(0.0, now=0.0)
    assert b.metrics(now=0.0)["state"] == "open"
    return b


def test_defaults_and_name() -> None:
    b = CircuitBreaker()
    assert b.name == "default"
    assert b.state == "closed"
    assert b.allow()
    assert CircuitBreaker(name="redis").name == "redis"
    assert "redis" in repr(CircuitBreaker(name="redis"))


def test_metrics_values() -> None:
    b = CircuitBreaker(window_size=4, minimum_calls=4, slow_call_duration=1.0, failure_rate_threshold=100.0)
    assert b.metrics(now=0.0) == {
        "state": "closed",
        "failure_rate": -1.0,
        "slow_call_rate": -1.0,
        "calls": 0,
        "failures": 0,
        "slow_calls": 0,
        "rejected": 0,
    }
    b.record_failure(2.0, now=0.0)
    b.record_success(1.0, now=0.0)
    b.record_success(1.5, now=0.0)
    assert b.metrics(now=0.0)["failure_rate"] == -1.0
    b.record_success(0.0, now=0.0)
    assert b.metrics(now=0.0) == {
        "state": "closed",
        "failure_rate": 25.0,
        "slow_call_rate": 50.0,
        "calls": 4,
        "failures": 1,
        "slow_calls": 2,
        "rejected": 0,
    }


def test_acquire_raises_breaker_open_with_retry_after_and_name() -> None:
    b = tripped(name="pg", wait_open=30.0)
    with pytest.raises(BreakerOpen) as info:
        b.acquire(now=10.0)
    assert isinstance(info.value, HulkError)
    assert info.value.retry_after == pytest.approx(20.0)
    assert info.value.name == "pg"
    assert "pg" in str(info.value)
    assert b.metrics(now=10.0)["rejected"] == 1
    b.acquire(now=30.0)  # half-open: the first probe passes
    assert b.metrics(now=30.0)["state"] == "half_open"


def test_retry_after_counts_down_and_half_opens_by_itself() -> None:
    b = tripped(wait_open=5.0)
    assert b.retry_after(now=0.0) == 5.0
    assert b.retry_after(now=4.0) == 1.0
    assert b.metrics(now=4.999)["state"] == "open"
    assert b.retry_after(now=5.0) == 0.0
    assert b.metrics(now=5.0)["state"] == "half_open"


def test_state_property_uses_the_real_clock() -> None:
    b = CircuitBreaker(wait_open=3600.0)
    b.force_open()
    opened: str = b.state
    assert opened == "open"
    assert not b.allow()
    assert 3599.0 < b.retry_after() <= 3600.0
    b.reset()
    assert b.state == "closed"
    assert b.metrics()["rejected"] == 0


def test_force_open_half_opens_after_the_wait() -> None:
    b = CircuitBreaker(wait_open=2.0, half_open_calls=1)
    b.force_open(now=0.0)
    assert not b.allow(now=1.9)
    assert b.allow(now=2.0)
    b.record_success(0.0, now=2.0)
    assert b.metrics(now=2.0)["state"] == "closed"


def test_release_frees_a_half_open_slot() -> None:
    b = tripped(wait_open=1.0, half_open_calls=2)
    assert b.allow(now=1.0)
    assert b.allow(now=1.0)
    assert not b.allow(now=1.0)
    b.release(now=1.0)
    assert b.allow(now=1.0)
    assert not b.allow(now=1.0)


@pytest.mark.parametrize("half_open_calls", [1, 3, 10])
def test_half_open_probes_are_exact_under_threads(half_open_calls: int) -> None:
    b = tripped(wait_open=1.0, half_open_calls=half_open_calls)
    start = threading.Barrier(8)
    granted: list[int] = []
    lock = threading.Lock()

    def probe() -> None:
        start.wait()
        mine = sum(1 for _ in range(500) if b.allow(now=1.0))
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=probe) for _ in range(8)]
    # A tiny switch interval makes the threads interleave inside the 500 calls instead of running
    # one after the other under the GIL.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(granted) == 8
    assert sum(granted) == half_open_calls
    assert b.metrics(now=1.0)["rejected"] == 8 * 500 - half_open_calls


def test_counts_are_exact_under_threads() -> None:
    b = CircuitBreaker(window_size=100_000, minimum_calls=100_000, failure_rate_threshold=100.0)

    def work() -> None:
        for i in range(2_000):
            assert b.allow(now=0.0)
            if i % 4 == 0:
                b.record_failure(0.0, now=0.0)
            else:
                b.record_success(0.0, now=0.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = b.metrics(now=0.0)
    assert (m["calls"], m["failures"]) == (16_000, 4_000)


@given(seed=st.integers(0, 2**64 - 1), jitter=st.floats(0.0, 1.0), wait=st.floats(0.001, 1000.0))
def test_jitter_bounds(seed: int, jitter: float, wait: float) -> None:
    b = CircuitBreaker(wait_open=wait, jitter=jitter, seed=seed)
    for i in range(5):
        now = i * 10_000.0
        b.force_open(now=now)
        assert wait - 1e-9 <= b.retry_after(now=now) <= wait * (1 + jitter) + 1e-9


def test_jitter_spreads_and_seed_reproduces() -> None:
    def waits(seed: int) -> list[float]:
        b = CircuitBreaker(wait_open=10.0, jitter=1.0, seed=seed)
        out = []
        for i in range(50):
            b.force_open(now=i * 100.0)
            out.append(b.retry_after(now=i * 100.0))
        return out

    assert waits(1) == waits(1)
    assert waits(1) != waits(2)
    assert max(waits(3)) - min(waits(3)) > 3.0
    unseeded = [CircuitBreaker(wait_open=10.0, jitter=1.0) for _ in range(5)]
    for b in unseeded:
        b.force_open(now=0.0)
    assert len({b.retry_after(now=0.0) for b in unseeded}) > 1


def test_time_window_bucket_width() -> None:
    b = CircuitBreaker(window_type="time", window_size=2, bucket_width=0.5, minimum_calls=2)
    b.record_success(0.0, now=0.1)
    b.record_success(0.0, now=1.6)
    assert b.metrics(now=1.99)["calls"] == 2
    assert b.metrics(now=2.0)["calls"] == 1  # the bucket [0, 0.5) has left the 4-bucket window
    b.record_failure(0.0, now=2.1)
    assert b.metrics(now=2.1)["state"] == "open"  # 1 of 2 = 50%


def test_failure_count_threshold() -> None:
    b = CircuitBreaker(window_size=100, minimum_calls=100, failure_count_threshold=3)
    for _ in range(10):
        b.record_success(0.0, now=0.0)
    b.record_failure(0.0, now=0.0)
    b.record_failure(0.0, now=0.0)
    assert b.metrics(now=0.0)["state"] == "closed"
    b.record_failure(0.0, now=0.0)
    assert b.metrics(now=0.0)["state"] == "open"


BAD_ARGS: list[tuple[str, object]] = [
    ("failure_rate_threshold", 0.0),
    ("failure_rate_threshold", -5.0),
    ("failure_rate_threshold", 100.01),
    ("failure_rate_threshold", math.nan),
    ("slow_call_rate_threshold", 0.0),
    ("slow_call_rate_threshold", 101.0),
    ("slow_call_rate_threshold", math.inf),
    ("slow_call_duration", -0.1),
    ("slow_call_duration", math.inf),
    ("slow_call_duration", math.nan),
    ("window_type", "sliding"),
    ("window_size", 0),
    ("window_size", -1),
    ("window_size", 10**7),
    ("minimum_calls", 0),
    ("minimum_calls", -2),
    ("wait_open", -1.0),
    ("wait_open", math.inf),
    ("wait_open", math.nan),
    ("jitter", -0.1),
    ("jitter", 1.01),
    ("jitter", math.nan),
    ("half_open_calls", 0),
    ("half_open_calls", -1),
    ("bucket_width", 0.0),
    ("bucket_width", -1.0),
    ("bucket_width", math.inf),
    ("bucket_width", math.nan),
    ("failure_count_threshold", 0),
    ("failure_count_threshold", -3),
    ("seed", -1),
    ("seed", 2**64),
]


@pytest.mark.parametrize(("arg", "value"), BAD_ARGS)
def test_bad_constructor_arguments_raise_value_error(arg: str, value: object) -> None:
    with pytest.raises(ValueError, match=arg) as info:
        CircuitBreaker(**{arg: value})  # type: ignore[arg-type]
    got = str(info.value).rsplit("got ", 1)[1]
    if isinstance(value, str):
        assert value in got
    elif isinstance(value, float) and math.isnan(value):
        assert math.isnan(float(got))
    else:
        assert isinstance(value, int | float)
        assert float(got) == value


@pytest.mark.parametrize(("window_size", "bucket_width"), [(5, 6.0), (5, 1e-9)])
def test_bad_bucket_width_for_time_windows(window_size: int, bucket_width: float) -> None:
    with pytest.raises(ValueError, match="bucket_width"):
        CircuitBreaker(window_type="time", window_size=window_size, bucket_width=bucket_width)
    # Count windows ignore bucket_width beyond its own checks.
    CircuitBreaker(window_size=window_size, bucket_width=6.0)


@pytest.mark.parametrize("duration", [-1.0, math.inf, math.nan])
def test_bad_durations_raise_value_error(duration: float) -> None:
    b = CircuitBreaker()
    with pytest.raises(ValueError, match=r"record_success\(duration\)"):
        b.record_success(duration)
    with pytest.raises(ValueError, match=r"record_failure\(duration\)"):
        b.record_failure(duration)
    assert b.metrics()["calls"] == 0


@pytest.mark.parametrize("method", ["allow", "acquire", "retry_after", "release", "metrics", "force_open"])
@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_bad_now_raises_value_error(method: str, now: float) -> None:
    b = CircuitBreaker()
    with pytest.raises(ValueError, match="now"):
        getattr(b, method)(now=now)
    with pytest.raises(ValueError, match="now"):
        b.record_success(0.0, now=now)


def test_wait_open_zero_and_jitter_one_are_allowed() -> None:
    b = CircuitBreaker(window_size=1, minimum_calls=1, wait_open=0.0, jitter=1.0)
    b.record_failure(0.0, now=0.0)
    assert b.metrics(now=0.0)["state"] == "half_open"
