"""The bounded in-memory status store: indexing, TTL, bound, wait and dead listing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hulk.engine import InMemoryStatusStore, StatusStore, Task, TaskNotFound, TaskStatus
from hulk.testing import FakeClock

S = TaskStatus


def make(task_id: str, status: TaskStatus, finished_at: float | None = None) -> Task:
    task = Task("t", id=task_id)
    task.status = status
    task.finished_at = finished_at
    return task


def test_is_a_status_store() -> None:
    assert isinstance(InMemoryStatusStore(), StatusStore)
    with pytest.raises(ValueError, match="capacity"):
        InMemoryStatusStore(0)
    with pytest.raises(ValueError, match="ttl"):
        InMemoryStatusStore(1, -1)


async def test_records_and_returns_snapshots() -> None:
    store = InMemoryStatusStore(clock=FakeClock())
    task = make("a", S.QUEUED)
    store.record([(task, None, S.QUEUED, 1.0)])
    got = await store.get("a")
    assert got is not None
    assert got is not task
    assert got.status is S.QUEUED
    assert store.peek("a") is task
    assert await store.get("b") is None


async def test_ttl_and_bound() -> None:
    clock = FakeClock()
    store = InMemoryStatusStore(capacity=2, ttl=10.0, clock=clock)
    tasks = [make(str(n), S.SUCCEEDED, clock.time()) for n in range(3)]
    for task in tasks:
        store.record([(task, S.RUNNING, S.SUCCEEDED, clock.time())])
    assert store.peek("0") is None
    assert store.peek("1") is not None
    clock.advance(10.0)
    store.expire()
    assert len(store) == 0


async def test_live_tasks_are_not_evicted() -> None:
    clock = FakeClock()
    store = InMemoryStatusStore(capacity=1, ttl=1.0, clock=clock)
    live = make("live", S.QUEUED)
    store.record([(live, None, S.QUEUED, 0.0)])
    for n in range(3):
        store.record([(make(f"d{n}", S.DEAD, clock.time()), S.RUNNING, S.DEAD, clock.time())])
    clock.advance(5)
    store.expire()
    assert store.peek("live") is live


async def test_wait_for_terminal() -> None:
    clock = FakeClock()
    store = InMemoryStatusStore(clock=clock)
    task = make("w", S.RUNNING)
    store.record([(task, None, S.QUEUED, 0.0)])
    waiter = asyncio.ensure_future(store.wait("w", timeout=10))
    other = asyncio.ensure_future(store.wait("w", timeout=10))
    await asyncio.sleep(0)
    task.status = S.SUCCEEDED
    task.result = 5
    task.finished_at = clock.time()
    store.record([(task, S.RUNNING, S.SUCCEEDED, clock.time())])
    done = await waiter
    assert done.result == 5
    assert (await other).result == 5
    assert (await store.wait("w")).status is S.SUCCEEDED  # already terminal: at once


async def test_wait_timeout_and_unknown() -> None:
    store = InMemoryStatusStore(clock=FakeClock())
    store.record([(make("x", S.QUEUED), None, S.QUEUED, 0.0)])
    with pytest.raises(TimeoutError):
        await store.wait("x", timeout=0)
    assert store._waiters == {}
    with pytest.raises(TaskNotFound, match="nope"):
        await store.wait("nope")


async def test_dead_listing_newest_first() -> None:
    clock = FakeClock()
    store = InMemoryStatusStore(capacity=3, clock=clock)
    for n in range(5):
        store.record([(make(f"d{n}", S.DEAD, clock.time() + n), S.RUNNING, S.DEAD, clock.time() + n)])
    dead = await store.dead(limit=10)
    assert [t.id for t in dead] == ["d4", "d3", "d2"]
    assert [t.id for t in await store.dead(limit=1)] == ["d4"]


class StoreMachine(RuleBasedStateMachine):
    """The store against a model: finished tasks kept newest-last, at most `capacity`, within the TTL."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = InMemoryStatusStore(capacity=3, ttl=5.0, clock=self.clock)
        self.live: set[str] = set()
        self.finished: list[tuple[float, str]] = []
        self.count = 0

    @rule()
    def submit(self) -> None:
        self.count += 1
        task_id = f"t{self.count}"
        self.store.record([(make(task_id, S.QUEUED), None, S.QUEUED, 0.0)])
        self.live.add(task_id)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        if not self.live:
            return
        task_id = data.draw(st.sampled_from(sorted(self.live)))
        self.live.discard(task_id)
        done = make(task_id, S.SUCCEEDED, self.clock.time())
        self.store.record([(done, S.RUNNING, S.SUCCEEDED, self.clock.time())])
        self.finished.append((self.clock.monotonic() + 5.0, task_id))
        self.finished = self.finished[-3:]

    @rule(seconds=st.floats(0, 4))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def agrees(self) -> None:
        self.store.expire()
        now = self.clock.monotonic()
        self.finished = [(exp, i) for exp, i in self.finished if exp > now]
        for task_id in self.live:
            assert self.store.peek(task_id) is not None
        kept = {i for i in (f"t{n}" for n in range(1, self.count + 1)) if i not in self.live and self.store.peek(i)}
        assert kept == {i for _exp, i in self.finished}


TestStore = StoreMachine.TestCase
TestStore.settings = settings(max_examples=50, deadline=None)


class LiveStoreMachine(StoreMachine):
    """The same model when the engine's live index answers for unfinished tasks (lazy indexing)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: dict[str, Task] = {}
        self.store = InMemoryStatusStore(capacity=3, ttl=5.0, clock=self.clock, live=self.index.get)

    @rule()
    def submit(self) -> None:
        super().submit()
        task_id = f"t{self.count}"
        self.index[task_id] = make(task_id, S.QUEUED)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        before = set(self.live)
        super().finish(data)
        for task_id in before - self.live:
            del self.index[task_id]

    @rule(data=st.data())
    def finish_twice_without_reading(self, data: st.DataObject) -> None:
        self.finish(data)
        self.finish(data)


TestLiveStore = LiveStoreMachine.TestCase
TestLiveStore.settings = settings(max_examples=50, deadline=None)


async def test_live_lookup_replaces_indexing_unfinished_tasks() -> None:
    clock = FakeClock()
    live: dict[str, Task] = {}
    store = InMemoryStatusStore(clock=clock, live=live.get)
    task = make("l", S.QUEUED)
    live["l"] = task
    store.record([(task, None, S.QUEUED, clock.time())])
    assert len(store) == 0  # not indexed: the engine's live index answers
    assert store.peek("l") is task
    waiter = asyncio.ensure_future(store.wait("l", timeout=10))
    await asyncio.sleep(0)
    del live["l"]
    task.status = S.SUCCEEDED
    task.finished_at = clock.time()
    store.record([(task, S.RUNNING, S.SUCCEEDED, clock.time())])
    assert (await waiter).status is S.SUCCEEDED
    assert store.peek("l") is task
    assert len(store) == 1
