"""Tests of the native BackoffScheduler: a stateful model check, jitter bounds, seeds, bad arguments."""

from __future__ import annotations

import gc
import math
import threading
import weakref
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hulk._native import BackoffScheduler, monotonic

Jitter = Literal["none", "full", "equal", "decorrelated"]
MODES: list[Jitter] = ["none", "full", "equal", "decorrelated"]


def capped(base: float, factor: float, max_delay: float, attempt: int) -> float:
    """The un-jittered delay of the contract: min(max_delay, base * factor**(attempt-1))."""
    try:
        return min(max_delay, base * factor ** (attempt - 1))
    except OverflowError:
        return max_delay


# --- the stateful model ---------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "é", ""])
# A few fixed offsets make ties (and -0.0 against 0.0) common; the floats cover the rest.
OFFSETS = st.one_of(
    st.sampled_from([-0.0, 0.0, 1.0, 2.5]),
    st.floats(min_value=-5.0, max_value=50.0, allow_nan=False),
)

BASE, FACTOR, MAX_DELAY = 0.5, 2.0, 10.0


class BackoffMachine(RuleBasedStateMachine):
    """Drives a scheduler and a sorted-list model with the same calls and a hand-driven clock."""

    def __init__(self) -> None:
        super().__init__()
        self.sched = BackoffScheduler(base=BASE, factor=FACTOR, max_delay=MAX_DELAY, jitter="none", seed=1)
        self.now = 1000.0
        self.seq = 0
        self.model: dict[str, tuple[float, int, object]] = {}

    def _put(self, key: str, due: float, item: object) -> None:
        self.model[key] = (due, self.seq, item)
        self.seq += 1

    @rule(key=KEYS, offset=OFFSETS)
    def schedule_at(self, key: str, offset: float) -> None:
        item = ("item", self.seq)
        due = self.now + offset
        self.sched.schedule_at(key, item, due)
        self._put(key, due, item)

    @rule(key=KEYS, attempt=st.integers(min_value=1, max_value=60))
    def schedule(self, key: str, attempt: int) -> None:
        item = ("retry", self.seq)
        due = self.sched.schedule(key, item, attempt, now=self.now)
        assert due == self.now + capped(BASE, FACTOR, MAX_DELAY, attempt)
        self._put(key, due, item)

    @rule(key=KEYS)
    def cancel(self, key: str) -> None:
        assert self.sched.cancel(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(dt=st.floats(min_value=0.0, max_value=20.0, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(max_items=st.integers(min_value=1, max_value=4), back=st.sampled_from([0.0, 0.0, 3.0, 100.0]))
    def pop_due(self, max_items: int, back: float) -> None:
        now = self.now - back
        due = sorted((e for e in self.model.items() if e[1][0] <= now), key=lambda e: (e[1][0], e[1][1]))
        expected = [item for _, (_, _, item) in due[:max_items]]
        for key, _ in due[:max_items]:
            del self.model[key]
        assert self.sched.pop_due(now=now, max_items=max_items) == expected

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def pop_all(self) -> None:
        expected = [item for _, _, item in sorted(self.model.values(), key=lambda e: (e[0], e[1]))]
        self.model.clear()
        assert self.sched.pop_due(now=1e300, max_items=len(expected) + 1) == expected

    @invariant()
    def sizes_and_membership_agree(self) -> None:
        assert len(self.sched) == len(self.model)
        for key in ["a", "b", "c", "d", "e", "é", ""]:
            assert (key in self.sched) == (key in self.model)

    @invariant()
    def next_due_is_the_earliest(self) -> None:
        expected = min((due for due, _, _ in self.model.values()), default=None)
        assert self.sched.next_due() == expected


TestBackoffMachine = BackoffMachine.TestCase
TestBackoffMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# --- jitter bounds ---------------------------------------------------------------------------------

policies = st.tuples(
    st.floats(min_value=1e-3, max_value=100.0),
    st.floats(min_value=1.0, max_value=10.0),
    st.floats(min_value=0.0, max_value=1e4),
).map(lambda t: (t[0], t[1], t[0] + t[2]))
attempts = st.one_of(st.integers(min_value=1, max_value=80), st.integers(min_value=1, max_value=10**30))
seeds = st.integers(min_value=0, max_value=2**64 - 1)


@given(policy=policies, attempt=attempts, seed=seeds)
def test_no_jitter_is_the_capped_delay(policy: tuple[float, float, float], attempt: int, seed: int) -> None:
    base, factor, max_delay = policy
    s = BackoffScheduler(base=base, factor=factor, max_delay=max_delay, jitter="none", seed=seed)
    assert s.delay(attempt) == pytest.approx(capped(base, factor, max_delay, attempt), rel=1e-12)


@given(policy=policies, attempt=attempts, seed=seeds)
def test_full_jitter_is_within_zero_and_d(policy: tuple[float, float, float], attempt: int, seed: int) -> None:
    base, factor, max_delay = policy
    s = BackoffScheduler(base=base, factor=factor, max_delay=max_delay, jitter="full", seed=seed)
    d = capped(base, factor, max_delay, attempt)
    for _ in range(20):
        assert 0.0 <= s.delay(attempt) <= d * (1 + 1e-12)


@given(policy=policies, attempt=attempts, seed=seeds)
def test_equal_jitter_is_within_half_d_and_d(policy: tuple[float, float, float], attempt: int, seed: int) -> None:
    base, factor, max_delay = policy
    s = BackoffScheduler(base=base, factor=factor, max_delay=max_delay, jitter="equal", seed=seed)
    d = capped(base, factor, max_delay, attempt)
    for _ in range(20):
        assert d / 2 * (1 - 1e-12) <= s.delay(attempt) <= d * (1 + 1e-12)


@given(policy=policies, attempt=attempts, seed=seeds)
def test_keyless_decorrelated_uses_the_previous_capped_delay(
    policy: tuple[float, float, float], attempt: int, seed: int
) -> None:
    base, factor, max_delay = policy
    s = BackoffScheduler(base=base, factor=factor, max_delay=max_delay, jitter="decorrelated", seed=seed)
    previous = base if attempt == 1 else capped(base, factor, max_delay, attempt - 1)
    for _ in range(20):
        assert base <= s.delay(attempt) <= min(max_delay, 3 * previous) * (1 + 1e-12)


@given(
    policy=policies,
    seed=seeds,
    plan=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
)
def test_decorrelated_follows_each_keys_previous_delay(
    policy: tuple[float, float, float], seed: int, plan: list[int]
) -> None:
    base, _, max_delay = policy
    s = BackoffScheduler(base=base, max_delay=max_delay, jitter="decorrelated", seed=seed)
    previous: dict[str, float] = {}
    for i, attempt in enumerate(plan):
        key = "ab"[i % 2]
        delay = s.schedule(key, i, attempt, now=0.0)
        start = previous.get(key, base) if attempt > 1 else base
        assert base <= delay <= min(max_delay, 3 * start) * (1 + 1e-12)
        previous[key] = delay
        if i % 3 == 0:
            s.pop_due(now=1e300)  # the memory outlives the popped entry


def test_decorrelated_memory_survives_pop_and_grows() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1e9, jitter="decorrelated", seed=3)
    delays = []
    for attempt in range(1, 40):
        delays.append(s.schedule("k", None, attempt, now=0.0))
        assert s.pop_due(now=1e12) == [None]
    # Starting from base every time would keep every delay under 3; remembering lets them grow.
    assert max(delays) > 1000.0


def test_huge_attempts_give_max_delay() -> None:
    s = BackoffScheduler(base=0.1, factor=3.0, max_delay=60.0, jitter="none")
    assert s.delay(10**6) == 60.0
    assert s.delay(10**40) == 60.0
    assert s.schedule("k", 1, 10**40, now=5.0) == 65.0
    full = BackoffScheduler(base=0.1, factor=3.0, max_delay=60.0, jitter="full", seed=0)
    assert all(0.0 <= full.delay(10**40) <= 60.0 for _ in range(100))


def test_delay_formula_examples() -> None:
    s = BackoffScheduler(base=0.5, max_delay=5.0, jitter="none")
    assert [s.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    flat = BackoffScheduler(base=2.0, factor=1.0, max_delay=2.0, jitter="decorrelated")
    assert {flat.delay(n) for n in range(1, 20)} == {2.0}


@pytest.mark.parametrize("jitter", MODES)
def test_a_seed_makes_jitter_reproducible(jitter: Jitter) -> None:
    def run(seed: int) -> list[float]:
        s = BackoffScheduler(base=0.01, max_delay=100.0, jitter=jitter, seed=seed)
        delays = [s.delay(n) for n in range(1, 30)]
        dues = [s.schedule(f"k{n % 3}", n, n % 9 + 1, now=1.0) for n in range(60)]
        return delays + dues

    assert run(42) == run(42)
    if jitter != "none":
        assert run(42) != run(43)


def test_default_jitter_is_full_and_unseeded_schedulers_differ() -> None:
    a = BackoffScheduler(base=1.0, max_delay=1.0)
    b = BackoffScheduler(base=1.0, max_delay=1.0)
    da = [a.delay(1) for _ in range(20)]
    assert all(0.0 <= d <= 1.0 for d in da)
    assert da != [b.delay(1) for _ in range(20)]


# --- behaviour ------------------------------------------------------------------------------------


def test_default_now_is_the_native_monotonic_clock() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1.0, jitter="none")
    before = monotonic()
    due = s.schedule("k", "v", 1)
    assert before + 1.0 <= due <= monotonic() + 1.0
    assert s.pop_due() == []
    s.schedule_at("past", None, monotonic() - 1.0)
    assert s.pop_due() == [None]
    assert s.next_due() == due
    assert "k" in s
    assert s.pop_due(now=due) == ["v"]


def test_contains_ignores_non_str_keys() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1.0)
    s.schedule_at("1", 1, 0.0)
    assert "1" in s
    assert 1 not in s
    assert b"1" not in s
    assert None not in s


def test_non_str_keys_are_a_type_error() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1.0)
    with pytest.raises(TypeError):
        s.schedule_at(1, "x", 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.cancel(b"k")  # type: ignore[arg-type]


def test_released_items_are_freed_and_may_call_back_into_the_scheduler() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1.0)
    seen: list[int] = []

    class CallsBack:
        def __del__(self) -> None:
            # Runs when the scheduler drops the item: it must not hold its lock by then.
            seen.append(len(s))

    for release in ("replace", "cancel", "pop"):
        obj = CallsBack()
        ref = weakref.ref(obj)
        s.schedule_at("k", obj, 1.0)
        del obj
        if release == "replace":
            s.schedule_at("k", "other", 2.0)
            assert s.cancel("k")
        elif release == "cancel":
            assert s.cancel("k")
        else:
            popped = s.pop_due(now=5.0)
            assert len(popped) == 1
            del popped
        gc.collect()
        assert ref() is None
    assert len(seen) == 3


def test_many_items_and_repeated_reschedules() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1.0)
    n = 50_000
    for i in range(n):
        s.schedule_at(f"k{i}", i, float((i * 7919) % n))
    for i in range(0, n, 2):
        assert s.cancel(f"k{i}")
    for _ in range(20):
        for i in range(1, 200, 2):
            s.schedule_at(f"k{i}", i, -1.0 * i)
    assert len(s) == n // 2
    out: list[Any] = []
    while batch := s.pop_due(now=float(n)):
        out.extend(batch)
    assert len(out) == n // 2
    assert out[:100] == list(range(199, 0, -2))
    rest = out[100:]
    assert rest == sorted(rest, key=lambda i: (i * 7919) % n)


def test_threads_share_one_scheduler() -> None:
    s = BackoffScheduler(base=1.0, max_delay=1.0, seed=5)
    per_thread = 5_000
    popped: list[list[Any]] = [[] for _ in range(4)]
    start = threading.Barrier(8)

    def producer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            s.schedule(f"{t}-{i}", (t, i), 1, now=0.0)

    def consumer(t: int) -> None:
        start.wait()
        for _ in range(2 * per_thread):
            popped[t].extend(s.pop_due(now=2.0, max_items=16))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=consumer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rest = s.pop_due(now=2.0, max_items=10**9)
    got = [x for batch in popped for x in batch] + rest
    assert sorted(got) == [(t, i) for t in range(4) for i in range(per_thread)]
    assert len(s) == 0
    assert s.next_due() is None


# --- bad arguments --------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"base": 0.5, "factor": 2.0, "max_delay": 10.0, "jitter": "full", "seed": 1}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("base", 0.0),
        ("base", -1.0),
        ("base", math.nan),
        ("base", math.inf),
        ("factor", 0.999),
        ("factor", -2.0),
        ("factor", math.nan),
        ("factor", math.inf),
        ("max_delay", 0.25),
        ("max_delay", -1.0),
        ("max_delay", math.nan),
        ("max_delay", math.inf),
        ("jitter", "fulll"),
        ("jitter", ""),
        ("seed", -1),
        ("seed", 2**64),
    ],
)
def test_bad_constructor_arguments_raise_value_error_naming_them(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"BackoffScheduler\({name}\)"):
        BackoffScheduler(**{**GOOD, name: value})


def test_bad_jitter_message_lists_the_allowed_modes() -> None:
    with pytest.raises(ValueError, match="decorr") as info:
        BackoffScheduler(base=1.0, max_delay=1.0, jitter="decorr")  # type: ignore[arg-type]
    for mode in MODES:
        assert repr(mode) in str(info.value) or f'"{mode}"' in str(info.value)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        BackoffScheduler(1.0, 2.0, 10.0)  # type: ignore[call-arg]


@pytest.mark.parametrize("attempt", [0, -1, -(10**30)])
def test_bad_attempts_raise_value_error(attempt: int) -> None:
    s = BackoffScheduler(**GOOD)
    with pytest.raises(ValueError, match=r"delay\(attempt\)"):
        s.delay(attempt)
    with pytest.raises(ValueError, match=r"schedule\(attempt\)"):
        s.schedule("k", 1, attempt, now=0.0)
    assert len(s) == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_times_raise_value_error(value: float) -> None:
    s = BackoffScheduler(**GOOD)
    with pytest.raises(ValueError, match=r"schedule_at\(due\)"):
        s.schedule_at("k", 1, value)
    with pytest.raises(ValueError, match=r"schedule\(now\)"):
        s.schedule("k", 1, 1, now=value)
    with pytest.raises(ValueError, match=r"pop_due\(now\)"):
        s.pop_due(now=value)
    assert len(s) == 0


@pytest.mark.parametrize("max_items", [0, -1, -(10**30)])
def test_bad_max_items_raise_value_error(max_items: int) -> None:
    s = BackoffScheduler(**GOOD)
    s.schedule_at("k", 1, 0.0)
    with pytest.raises(ValueError, match=r"pop_due\(max_items\)"):
        s.pop_due(now=1.0, max_items=max_items)
    assert s.pop_due(now=1.0, max_items=10**30) == [1]
