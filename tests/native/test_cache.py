"""Tests of the native L1Cache: behaviour, TTL with a driven clock, bad arguments, a stateful model, threads."""

from __future__ import annotations

import math
import random
import sys
import threading
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hulk._native import L1Cache

MISS = object()


# --- behaviour ---------------------------------------------------------------------------------------


def test_get_set_and_default() -> None:
    c = L1Cache(10)
    assert c.capacity == 10
    assert c.get("a") is None
    assert c.get("a", 5) == 5
    assert c.get("a", default=MISS) is MISS
    value = object()
    c.set("a", value)
    assert c.get("a") is value
    c.set("a", 2)
    assert c.get("a") == 2
    assert len(c) == 1


def test_str_and_bytes_are_different_keys() -> None:
    c = L1Cache(10)
    c.set("a", "str")
    c.set(b"a", "bytes")
    assert c.get("a") == "str"
    assert c.get(b"a") == "bytes"
    assert len(c) == 2
    assert c.delete("a")
    assert c.get(b"a") == "bytes"


def test_non_ascii_and_str_subclass_keys() -> None:
    class Colour(StrEnum):
        RED = "red"

    c = L1Cache(10)
    c.set("clé-ü-日本", 1)
    assert c.get("clé-ü-日本") == 1
    assert c.get("clé-ü-日本".encode()) is None
    c.set(Colour.RED, 2)
    assert c.get("red") == 2


def test_delete_contains_clear() -> None:
    c = L1Cache(10)
    c.set("a", 1)
    c.set(b"b", 2)
    assert "a" in c
    assert b"b" in c
    assert "b" not in c
    assert c.delete("a") is True
    assert c.delete("a") is False
    assert "a" not in c
    c.clear()
    assert len(c) == 0
    assert b"b" not in c
    assert c.get(b"b") is None


def test_len_never_exceeds_capacity() -> None:
    for capacity in (1, 2, 3, 7, 64):
        c = L1Cache(capacity)
        for i in range(capacity * 10):
            c.set(f"k{i % (capacity * 4)}", i)
            assert len(c) <= capacity
        assert len(c) == capacity


def test_stats_count_hits_misses_inserts_evictions() -> None:
    c = L1Cache(2)
    assert c.stats() == {
        "hits": 0,
        "misses": 0,
        "inserts": 0,
        "evictions": 0,
        "hit_ratio": 0.0,
        "size": 0,
        "capacity": 2,
    }
    c.set("a", 1)
    c.set("a", 2)  # a replacement is an insert, not an eviction
    c.get("a")
    c.get("zz")
    s = c.stats()
    assert (s["hits"], s["misses"], s["inserts"], s["evictions"], s["size"]) == (1, 1, 2, 0, 1)
    assert s["hit_ratio"] == 0.5
    for i in range(10):
        c.set(f"k{i}", i)
    s = c.stats()
    assert s["inserts"] == 12
    assert s["size"] == 2
    assert s["evictions"] == 12 - 2 - 1  # all but the two held and the replaced value
    "k9" in c  # noqa: B015 - membership is not a read
    assert c.stats()["hits"] + c.stats()["misses"] == 2


def test_get_many_and_set_many() -> None:
    c = L1Cache(10)
    mixed: dict[str | bytes, object] = {"a": 1, b"b": 2}
    c.set_many(mixed)
    c.set_many([("c", 3), (b"d", 4)])
    c.set_many((k, v) for k, v in [("e", 5)])
    assert c.get_many(["a", b"b", "c", b"d", "e", "missing", b"a"]) == {"a": 1, b"b": 2, "c": 3, b"d": 4, "e": 5}
    assert c.get_many(iter([])) == {}
    assert c.stats()["misses"] == 2


def test_repr() -> None:
    c = L1Cache(3)
    c.set("a", 1)
    assert repr(c) == "L1Cache(capacity=3, size=1)"


def test_frequent_keys_survive_a_scan() -> None:
    c = L1Cache(200)
    hot = [f"hot{i}" for i in range(100)]
    for _ in range(3):
        for k in hot:
            if c.get(k) is None:
                c.set(k, k)
    for i in range(5_000):
        c.set(f"scan{i}", i)
    assert sum(k in c for k in hot) >= 90


def test_reference_counts_balance() -> None:
    # The cache holds exactly one reference per stored entry and hands out new ones on reads.
    value = object()
    base = sys.getrefcount(value)
    c = L1Cache(4)
    c.set("a", value)
    assert sys.getrefcount(value) == base + 1
    for _ in range(100):
        assert c.get("a") is value
    assert c.get_many(["a", "a", "zz"]) == {"a": value}
    assert "a" in c
    assert sys.getrefcount(value) == base + 1
    c.set("a", 1)  # replaced
    assert sys.getrefcount(value) == base
    c.set("b", value, ttl=1, now=0.0)
    assert c.get("b", now=5.0) is None  # expired, dropped
    assert sys.getrefcount(value) == base
    one = L1Cache(1)
    one.set("c", value)
    one.set("k", 1)  # "c" is evicted
    assert "c" not in one
    assert one.stats()["evictions"] == 1
    assert sys.getrefcount(value) == base
    c.set_many({"d": value, "e": value})
    assert sys.getrefcount(value) == base + 2
    assert c.delete("d")
    c.clear()
    assert sys.getrefcount(value) == base
    c.set("f", value)
    del c
    assert sys.getrefcount(value) == base


# --- TTL with a driven clock -------------------------------------------------------------------------


def test_ttl_expires_with_driven_now() -> None:
    c = L1Cache(10)
    c.set("a", 1, ttl=10, now=100.0)
    assert c.get("a", now=109.999) == 1
    assert c.get("a", now=110.0) is None  # expired at now >= set time + ttl
    s = c.stats()
    assert (s["hits"], s["misses"], s["evictions"], s["size"]) == (1, 1, 1, 0)
    # Dropped on that read, so it stays gone even for an earlier `now`.
    assert c.get("a", now=101.0) is None


def test_default_ttl_and_override() -> None:
    c = L1Cache(10, ttl=5)
    c.set("default", 1, now=0.0)
    c.set("longer", 2, ttl=50, now=0.0)
    c.set("never", 3, ttl=math.inf, now=0.0)
    assert c.get_many(["default", "longer", "never"], now=4.0) == {"default": 1, "longer": 2, "never": 3}
    assert c.get_many(["default", "longer", "never"], now=6.0) == {"longer": 2, "never": 3}
    assert c.get_many(["default", "longer", "never"], now=1e12) == {"never": 3}


def test_set_many_with_ttl() -> None:
    c = L1Cache(10)
    c.set_many({"a": 1, "b": 2}, ttl=1, now=0.0)
    c.set_many([("c", 3)], now=0.0)
    assert c.get_many(["a", "b", "c"], now=0.5) == {"a": 1, "b": 2, "c": 3}
    assert c.get_many(["a", "b", "c"], now=1.0) == {"c": 3}


def test_zero_ttl_is_expired_at_once() -> None:
    c = L1Cache(10)
    c.set("a", 1, ttl=0, now=5.0)
    assert c.get("a", now=5.0) is None


def test_entries_without_ttl_ignore_now() -> None:
    c = L1Cache(10)
    c.set("a", 1, now=0.0)
    assert c.get("a", now=1e15) == 1
    assert c.get("a") == 1


def test_expiry_by_the_native_clock() -> None:
    c = L1Cache(10)
    c.set("a", 1, ttl=3600)
    assert "a" in c
    assert c.get("a") == 1
    c.set("b", 1, ttl=0)
    assert "b" not in c
    assert c.get("b") is None


# --- bad arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, -(2**40)])
def test_bad_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match=r"capacity.*" + str(capacity)):
        L1Cache(capacity)


def test_capacity_must_be_an_int() -> None:
    with pytest.raises(TypeError):
        L1Cache("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        L1Cache(10, 5)  # type: ignore[call-arg]


@pytest.mark.parametrize("ttl", [-1.0, -1e-9, math.nan, -math.inf])
def test_bad_ttl(ttl: float) -> None:
    with pytest.raises(ValueError, match=r"L1Cache\(ttl\)"):
        L1Cache(10, ttl=ttl)
    c = L1Cache(10)
    with pytest.raises(ValueError, match=r"set\(ttl\)"):
        c.set("a", 1, ttl=ttl)
    with pytest.raises(ValueError, match=r"set_many\(ttl\)"):
        c.set_many({"a": 1}, ttl=ttl)
    assert len(c) == 0


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_bad_now(now: float) -> None:
    c = L1Cache(10)
    with pytest.raises(ValueError, match=r"get\(now\)"):
        c.get("a", now=now)
    with pytest.raises(ValueError, match=r"set\(now\)"):
        c.set("a", 1, now=now)
    with pytest.raises(ValueError, match=r"get_many\(now\)"):
        c.get_many(["a"], now=now)
    with pytest.raises(ValueError, match=r"set_many\(now\)"):
        c.set_many({"a": 1}, now=now)


@pytest.mark.parametrize(
    ("key", "name"),
    [(1, "int"), (None, "NoneType"), (bytearray(b"a"), "bytearray"), (("a",), "tuple"), (1.5, "float")],
)
def test_bad_key_types(key: Any, name: str) -> None:
    c = L1Cache(10)
    c.set("a", 1)
    msg = rf"key must be str or bytes, got {name}"
    with pytest.raises(TypeError, match=msg):
        c.get(key)
    with pytest.raises(TypeError, match=msg):
        c.set(key, 1)
    with pytest.raises(TypeError, match=msg):
        c.delete(key)
    with pytest.raises(TypeError, match=msg):
        key in c  # noqa: B015
    with pytest.raises(TypeError, match=msg):
        c.get_many(["a", key])
    with pytest.raises(TypeError, match=msg):
        c.set_many([("b", 2), (key, 1)])
    assert "b" not in c  # a bad key stores nothing from the batch
    assert len(c) == 1


def test_bad_batches() -> None:
    c = L1Cache(10)
    with pytest.raises(TypeError):
        c.get_many(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"set_many\(items\).*pairs, got list"):
        c.set_many([["a", 1]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"set_many\(items\).*pairs, got tuple"):
        c.set_many([("a", 1, 2)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        c.set_many(5)  # type: ignore[arg-type]
    assert len(c) == 0


def test_surrogate_str_key_raises_unicode_error() -> None:
    c = L1Cache(10)
    with pytest.raises(UnicodeEncodeError):
        c.set("\ud800", 1)


# --- stateful model ----------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "日", b"a", b"b", b"c", b"\xff"])
TTLS = st.none() | st.floats(min_value=0.0, max_value=10.0)


class CacheModel(RuleBasedStateMachine):
    """A dict of what was last set per key, with its expiry; the cache may have evicted any of it."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = L1Cache(1)
        self.model: dict[str | bytes, tuple[object, float]] = {}
        self.now = 1_000.0
        self.default_ttl: float | None = None
        self.reads = 0

    @initialize(capacity=st.integers(min_value=1, max_value=6), ttl=st.none() | st.floats(0.5, 10.0))
    def build(self, capacity: int, ttl: float | None) -> None:
        self.cache = L1Cache(capacity, ttl=ttl)
        self.default_ttl = ttl

    def _expiry(self, ttl: float | None) -> float:
        ttl = self.default_ttl if ttl is None else ttl
        return math.inf if ttl is None else self.now + ttl

    def _check_hit(self, key: str | bytes, got: object) -> None:
        if got is MISS:
            return
        assert key in self.model, f"hit on {key!r}, which was never set or was deleted"
        value, expires_at = self.model[key]
        assert got is value, f"{key!r}: got {got!r}, last set {value!r}"
        assert self.now < expires_at, f"{key!r}: hit at {self.now} on an entry expired at {expires_at}"

    @rule(key=KEYS, ttl=TTLS)
    def set(self, key: str | bytes, ttl: float | None) -> None:
        value = object()
        self.cache.set(key, value, ttl=ttl, now=self.now)
        self.model[key] = (value, self._expiry(ttl))

    @rule(keys=st.lists(KEYS, max_size=4), ttl=TTLS)
    def set_many(self, keys: list[str | bytes], ttl: float | None) -> None:
        items = [(k, object()) for k in keys]
        self.cache.set_many(items, ttl=ttl, now=self.now)
        for k, v in items:
            self.model[k] = (v, self._expiry(ttl))

    @rule(key=KEYS)
    def get(self, key: str | bytes) -> None:
        self.reads += 1
        got = self.cache.get(key, MISS, now=self.now)
        self._check_hit(key, got)
        if got is MISS and key in self.model and self.now >= self.model[key][1]:
            del self.model[key]  # expired: the cache dropped it (or had evicted it)

    @rule(keys=st.lists(KEYS, max_size=4, unique=True))
    def get_many(self, keys: list[str | bytes]) -> None:
        self.reads += len(keys)
        found = self.cache.get_many(keys, now=self.now)
        assert set(found) <= set(keys)
        for k in keys:
            self._check_hit(k, found.get(k, MISS))

    @rule(key=KEYS)
    def delete(self, key: str | bytes) -> None:
        removed = self.cache.delete(key)
        if key not in self.model:
            assert not removed
        self.model.pop(key, None)
        assert self.cache.get(key, MISS, now=self.now) is MISS
        self.reads += 1

    @rule(key=KEYS)
    def contains(self, key: str | bytes) -> None:
        present = key in self.cache
        if key not in self.model:
            assert not present
        elif self.model[key][1] == math.inf:
            self.reads += 1
            assert present == (self.cache.get(key, MISS, now=self.now) is not MISS)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()
        assert len(self.cache) == 0

    @rule(dt=st.floats(min_value=0.0, max_value=4.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def bounded(self) -> None:
        n = len(self.cache)
        assert n <= self.cache.capacity
        assert n <= len(self.model)
        s = self.cache.stats()
        assert s["hits"] + s["misses"] == self.reads
        assert s["size"] <= s["capacity"]


CacheModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestCacheModel = CacheModel.TestCase


# --- threads -----------------------------------------------------------------------------------------


def test_threads_share_one_cache() -> None:
    capacity, n_threads, n_ops = 64, 4, 20_000
    c = L1Cache(capacity)
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    gets = [0] * n_threads

    def work(t: int) -> None:
        rng = random.Random(t)
        try:
            barrier.wait()
            for i in range(n_ops):
                key = f"k{rng.randrange(200)}"
                op = rng.random()
                if op < 0.6:
                    gets[t] += 1
                    got = c.get(key)
                    assert got is None or got[0] == key, (key, got)
                elif op < 0.95:
                    c.set(key, (key, t, i))
                else:
                    c.delete(key)
                assert len(c) <= capacity
        except BaseException as e:  # reported below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]
    s = c.stats()
    assert s["hits"] + s["misses"] == sum(gets)
    assert s["size"] <= capacity


def test_value_finalizer_may_use_the_cache() -> None:
    # An evicted or replaced value is released after the shard lock: its __del__ can call the cache.
    c = L1Cache(2)
    seen: list[object] = []

    class Reentrant:
        def __del__(self) -> None:
            seen.append(c.get("other"))
            c.set("from-del", 1)

    c.set("other", "x")
    c.set("a", Reentrant())
    c.set("a", Reentrant())  # replacement
    for i in range(8):
        c.set(f"k{i}", Reentrant())  # evictions
    c.delete("k7")
    c.clear()
    assert len(seen) >= 3


def _chunks(n: int) -> Iterator[list[tuple[str, int]]]:
    for start in range(0, n, 100):
        yield [(f"k{i}", i) for i in range(start, start + 100)]


def test_batches_across_threads() -> None:
    c = L1Cache(1_000)

    def writer() -> None:
        for chunk in _chunks(5_000):
            c.set_many(chunk)

    def reader() -> None:
        for chunk in _chunks(5_000):
            found = c.get_many(k for k, _ in chunk)
            assert all(found[k] == int(k[1:]) for k in found)

    threads = [threading.Thread(target=f) for f in (writer, reader, writer, reader)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(c) <= 1_000
