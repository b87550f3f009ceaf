"""Stateful property test: the cache (L1 + L3, restarts included) against a plain dict."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hulk.cache import Cache

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
NAMESPACES = st.sampled_from(["default", "t1"])
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
) | st.binary(max_size=8)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="hulk-cache-model-")
        self.model: dict[tuple[str, str], Any] = {}
        self.cache = self._start()

    def _start(self) -> Cache:
        cache = Cache(l1_size=3, l3_path=self.dir + "/l3")
        self.loop.run_until_complete(cache.start())
        return cache

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @rule(ns=NAMESPACES, key=KEYS, value=VALUES)
    def set(self, ns: str, key: str, value: Any) -> None:
        self.run(self.cache.namespace(ns).set(key, value))
        self.model[(ns, key)] = value

    @rule(ns=NAMESPACES, items=st.dictionaries(KEYS, VALUES, max_size=3))
    def set_many(self, ns: str, items: dict[str, Any]) -> None:
        self.run(self.cache.namespace(ns).set_many(items))
        self.model.update({(ns, k): v for k, v in items.items()})

    @rule(ns=NAMESPACES, key=KEYS)
    def delete(self, ns: str, key: str) -> None:
        self.run(self.cache.namespace(ns).delete(key))
        self.model.pop((ns, key), None)

    @rule(ns=NAMESPACES, key=KEYS)
    def get(self, ns: str, key: str) -> None:
        missing = object()
        got = self.run(self.cache.namespace(ns).get(key, missing))
        assert got == self.model.get((ns, key), missing)

    @rule(ns=NAMESPACES, keys=st.lists(KEYS, max_size=4))
    def get_many(self, ns: str, keys: list[str]) -> None:
        got = self.run(self.cache.namespace(ns).get_many(keys))
        assert got == {k: self.model[(ns, k)] for k in keys if (ns, k) in self.model}

    @rule(ns=NAMESPACES, key=KEYS, value=VALUES)
    def get_or_compute(self, ns: str, key: str, value: Any) -> None:
        got = self.run(self.cache.namespace(ns).get_or_compute(key, lambda: value))
        expected = self.model.setdefault((ns, key), value)
        assert got == expected

    @rule()
    def snapshot(self) -> None:
        self.run(self.cache.snapshot())

    @rule()
    def restart(self) -> None:
        self.run(self.cache.stop())
        self.cache = self._start()

    @invariant()
    def healthy(self) -> None:
        assert self.cache.health()["status"] == "ok"

    def teardown(self) -> None:
        try:
            self.run(self.cache.stop())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


CacheMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=20, deadline=None)
TestCacheModel = CacheMachine.TestCase
