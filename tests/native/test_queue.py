"""The native BoundedQueue: FIFO model, backpressure, close, blocking calls, waiters, bad arguments."""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hulk._native import BoundedQueue
from hulk.errors import HulkError, QueueClosed, QueueEmpty, QueueFull

JOIN_TIMEOUT = 30.0  # a safety net against a hang, never a measurement


def start(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "thread still blocked"


# --- construction and plain use ------------------------------------------------------------------


def test_fifo_backpressure_and_stats() -> None:
    q = BoundedQueue(2)
    assert q.capacity == 2
    assert not q.closed
    assert len(q) == 0
    assert q.try_push("a")
    assert q.try_push(None)
    assert not q.try_push("c")
    assert len(q) == 2
    assert repr(q) == "BoundedQueue(capacity=2, len=2, closed=False)"
    assert q.try_pop() == "a"
    assert q.try_pop() is None
    with pytest.raises(QueueEmpty):
        q.try_pop()
    assert q.stats() == {"pushed": 2, "popped": 2, "rejected": 1}


def test_items_keep_their_identity() -> None:
    q = BoundedQueue(4)
    item = object()
    q.push(item)
    assert q.pop() is item


def test_errors_belong_to_the_tree() -> None:
    assert issubclass(QueueEmpty, HulkError)
    assert issubclass(QueueFull, HulkError)
    assert issubclass(QueueClosed, HulkError)


@pytest.mark.parametrize("capacity", [0, -1, 2**26 + 1])
def test_bad_capacity_raises_value_error(capacity: int) -> None:
    with pytest.raises(ValueError, match=r"capacity.*" + str(capacity)):
        BoundedQueue(capacity)


def test_capacity_of_wrong_type_raises_type_error() -> None:
    with pytest.raises(TypeError):
        BoundedQueue("8")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1.0, -1e-9, math.nan, math.inf])
def test_bad_timeouts_raise_value_error(timeout: float) -> None:
    q = BoundedQueue(1)
    with pytest.raises(ValueError, match=r"pop\(timeout\)"):
        q.pop(timeout=timeout)
    with pytest.raises(ValueError, match=r"push\(timeout\)"):
        q.push("x", timeout=timeout)
    assert len(q) == 0


@pytest.mark.parametrize("max_items", [0, -3])
def test_bad_max_items_raises_value_error(max_items: int) -> None:
    with pytest.raises(ValueError, match=r"max_items.*" + str(max_items)):
        BoundedQueue(1).pop_many(max_items)


def test_non_callable_waiter_raises_type_error() -> None:
    with pytest.raises(TypeError, match="callback"):
        BoundedQueue(1).add_waiter(42)  # type: ignore[arg-type]


def test_non_iterable_batch_raises_type_error() -> None:
    q = BoundedQueue(1)
    with pytest.raises(TypeError):
        q.push_many(42)  # type: ignore[arg-type]
    assert len(q) == 0


def test_failing_iterator_queues_nothing() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    q = BoundedQueue(4)
    with pytest.raises(RuntimeError, match="boom"):
        q.push_many(items())
    assert len(q) == 0


# --- batches -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [list, tuple, iter])
def test_push_many_accepts_in_order_until_full(kind: Callable[[list[int]], Any]) -> None:
    q = BoundedQueue(5)
    assert q.push_many(kind([1, 2])) == 2
    assert q.push_many(kind([3, 4, 5, 6, 7])) == 3
    assert q.stats()["rejected"] == 2
    assert q.pop_many(2) == [1, 2]
    assert q.pop_many(100) == [3, 4, 5]
    assert q.pop_many(1) == []


def test_push_many_into_a_full_queue_takes_nothing() -> None:
    q = BoundedQueue(1)
    q.try_push(0)
    assert q.push_many([1, 2]) == 0
    assert q.stats() == {"pushed": 1, "popped": 0, "rejected": 2}


# --- timeouts ------------------------------------------------------------------------------------


def test_timeouts_raise_queue_full_and_queue_empty() -> None:
    q = BoundedQueue(1)
    with pytest.raises(QueueEmpty):
        q.pop(timeout=0)
    with pytest.raises(QueueEmpty):
        q.pop(timeout=0.01)
    q.push("a", timeout=0)
    with pytest.raises(QueueFull) as full:
        q.push("b", timeout=0)
    assert full.value.capacity == 1
    with pytest.raises(QueueFull):
        q.push("b", timeout=0.01)
    assert q.stats() == {"pushed": 1, "popped": 0, "rejected": 2}
    assert q.pop(timeout=0) == "a"


def test_blocked_pop_gets_an_item_pushed_by_another_thread() -> None:
    q = BoundedQueue(1)
    got: list[object] = []
    popper = start(lambda: got.append(q.pop(timeout=JOIN_TIMEOUT)))
    q.push("x")
    join(popper)
    assert got == ["x"]


def test_blocked_push_gets_room_made_by_another_thread() -> None:
    q = BoundedQueue(1)
    q.push("first")
    pusher = start(lambda: q.push("second", timeout=JOIN_TIMEOUT))
    assert q.pop() == "first"
    join(pusher)
    assert q.pop() == "second"


def test_a_signal_interrupts_a_blocked_pop_on_the_main_thread() -> None:
    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        q = BoundedQueue(1)
        main = threading.main_thread().ident or 0
        with pytest.raises(Interrupted):  # noqa: PT012 - the signal must be sent once inside the block
            start(lambda: signal.pthread_kill(main, signal.SIGUSR1))
            q.pop()
    finally:
        signal.signal(signal.SIGUSR1, previous)


# --- close ---------------------------------------------------------------------------------------


def test_close_refuses_pushes_and_drains() -> None:
    q = BoundedQueue(4)
    q.push_many([1, 2, 3])
    q.close()
    q.close()
    assert q.closed
    with pytest.raises(QueueClosed):
        q.try_push(4)
    with pytest.raises(QueueClosed):
        q.push(4)
    with pytest.raises(QueueClosed):
        q.push_many([4])
    with pytest.raises(QueueClosed):
        q.push_many(iter([4]))
    assert q.try_pop() == 1
    assert q.pop() == 2
    assert q.pop_many(5) == [3]
    with pytest.raises(QueueClosed):
        q.try_pop()
    with pytest.raises(QueueClosed):
        q.pop()
    with pytest.raises(QueueClosed):
        q.pop(timeout=1)
    with pytest.raises(QueueClosed):
        q.pop_many(5)


def test_close_wakes_blocked_pops_and_pushes() -> None:
    # Whether a caller is already parked or about to park when close() runs, it must end with
    # QueueClosed; the safety timeout in join() turns a lost wake-up into a failure.
    empty = BoundedQueue(1)
    full = BoundedQueue(1)
    full.push("x")
    outcomes: list[str] = []
    ready = threading.Barrier(5)

    def pop() -> None:
        ready.wait()
        try:
            empty.pop()
        except QueueClosed:
            outcomes.append("pop closed")

    def push() -> None:
        ready.wait()
        try:
            full.push("y")
        except QueueClosed:
            outcomes.append("push closed")

    threads = [start(pop), start(pop), start(push), start(push)]
    ready.wait()
    empty.close()
    full.close()
    for thread in threads:
        join(thread)
    assert sorted(outcomes) == ["pop closed", "pop closed", "push closed", "push closed"]
    assert full.try_pop() == "x"


# --- waiters -------------------------------------------------------------------------------------


def test_add_waiter_refuses_when_non_empty_or_closed() -> None:
    calls: list[str] = []
    q = BoundedQueue(2)
    q.push("a")
    assert not q.add_waiter(lambda: calls.append("non-empty"))
    q.pop()
    q.close()
    assert not q.add_waiter(lambda: calls.append("closed"))
    assert calls == []


def test_waiters_run_once_after_the_next_push() -> None:
    calls: list[str] = []
    q = BoundedQueue(4)
    assert q.add_waiter(lambda: calls.append("one"))
    assert q.add_waiter(lambda: calls.append("two"))
    assert calls == []
    q.try_push(1)
    assert calls == ["one", "two"]
    q.try_push(2)
    assert calls == ["one", "two"]


@pytest.mark.parametrize(
    "wake",
    [
        lambda q: q.try_push(1),
        lambda q: q.push(1),
        lambda q: q.push_many([1, 2]),
        lambda q: q.close(),
    ],
    ids=["try_push", "push", "push_many", "close"],
)
def test_every_push_flavour_and_close_run_waiters(wake: Callable[[BoundedQueue], object]) -> None:
    calls: list[int] = []
    q = BoundedQueue(4)
    assert q.add_waiter(lambda: calls.append(1))
    wake(q)
    assert calls == [1]


def test_waiters_run_on_the_pushing_thread() -> None:
    threads: list[threading.Thread] = []
    q = BoundedQueue(1)
    assert q.add_waiter(lambda: threads.append(threading.current_thread()))
    pusher = start(lambda: q.push("x"))
    join(pusher)
    assert threads == [pusher]


def test_a_failing_waiter_is_reported_and_the_push_still_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable.exc_value))
    calls: list[str] = []

    def fail() -> None:
        raise RuntimeError("waiter failed")

    q = BoundedQueue(2)
    assert q.add_waiter(fail)
    assert q.add_waiter(lambda: calls.append("second"))
    assert q.try_push("x")
    assert len(reported) == 1
    assert isinstance(reported[0], RuntimeError)
    assert calls == ["second"]
    assert q.try_pop() == "x"


def test_a_waiter_racing_a_push_is_never_lost() -> None:
    # A waiter registered while another thread pushes is either refused (the caller pops again)
    # or run by that push: never left registered next to an item.
    q = BoundedQueue(1)
    for round_ in range(300):
        go = threading.Barrier(2)
        woken: list[int] = []

        def push(n: int = round_, gate: threading.Barrier = go) -> None:
            gate.wait()
            q.try_push(n)

        pusher = start(push)
        go.wait()
        registered = q.add_waiter(partial(woken.append, round_))
        join(pusher)
        assert woken == ([round_] if registered else [])
        assert q.try_pop() == round_


# --- threads -------------------------------------------------------------------------------------


def test_four_producers_four_consumers_deliver_every_item_exactly_once() -> None:
    per_producer = 20_000
    q = BoundedQueue(16)
    received: list[list[tuple[int, int]]] = [[] for _ in range(4)]

    def produce(p: int) -> None:
        for i in range(per_producer):
            q.push((p, i))

    def consume(c: int) -> None:
        mine = received[c]
        while True:
            try:
                mine.append(q.pop())
            except QueueClosed:
                return

    producers = [start(partial(produce, p)) for p in range(4)]
    consumers = [start(partial(consume, c)) for c in range(4)]
    for thread in producers:
        join(thread)
    q.close()
    for thread in consumers:
        join(thread)
    everything = [item for mine in received for item in mine]
    assert sorted(everything) == [(p, i) for p in range(4) for i in range(per_producer)]
    for mine in received:
        for p in range(4):
            from_p = [i for (q_p, i) in mine if q_p == p]
            assert from_p == sorted(from_p), "FIFO order per producer"
    assert q.stats() == {"pushed": 4 * per_producer, "popped": 4 * per_producer, "rejected": 0}


# --- model ---------------------------------------------------------------------------------------

items = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=2))


class QueueMachine(RuleBasedStateMachine):
    """BoundedQueue against a deque with a capacity."""

    def __init__(self) -> None:
        super().__init__()
        self.q = BoundedQueue(1)
        self.model: deque[object] = deque()
        self.capacity = 1
        self.is_closed = False
        self.pushed = self.popped = self.rejected = 0

    @initialize(capacity=st.integers(1, 6))
    def create(self, capacity: int) -> None:
        self.q = BoundedQueue(capacity)
        self.capacity = capacity

    def _room(self) -> bool:
        return len(self.model) < self.capacity

    def _take(self) -> object:
        self.popped += 1
        return self.model.popleft()

    @rule(item=items)
    def try_push(self, item: object) -> None:
        if self.is_closed:
            with pytest.raises(QueueClosed):
                self.q.try_push(item)
            return
        accepted = self._room()
        assert self.q.try_push(item) is accepted
        if accepted:
            self.model.append(item)
            self.pushed += 1
        else:
            self.rejected += 1

    @rule(item=items)
    def push_without_waiting(self, item: object) -> None:
        if self.is_closed:
            with pytest.raises(QueueClosed):
                self.q.push(item, timeout=0)
        elif self._room():
            self.q.push(item, timeout=0)
            self.model.append(item)
            self.pushed += 1
        else:
            with pytest.raises(QueueFull) as full:
                self.q.push(item, timeout=0)
            assert full.value.capacity == self.capacity
            self.rejected += 1

    @rule(batch=st.lists(items, max_size=8), kind=st.sampled_from([list, tuple, iter]))
    def push_many(self, batch: list[object], kind: Callable[[list[object]], Any]) -> None:
        if self.is_closed:
            with pytest.raises(QueueClosed):
                self.q.push_many(kind(batch))
            return
        accepted = min(len(batch), self.capacity - len(self.model))
        assert self.q.push_many(kind(batch)) == accepted
        self.model.extend(batch[:accepted])
        self.pushed += accepted
        self.rejected += len(batch) - accepted

    @rule(blocking=st.booleans())
    def pop_one(self, blocking: bool) -> None:
        pop: Callable[[], object] = (lambda: self.q.pop(timeout=0)) if blocking else self.q.try_pop
        if self.model:
            assert pop() == self._take()
        elif self.is_closed:
            with pytest.raises(QueueClosed):
                pop()
        else:
            with pytest.raises(QueueEmpty):
                pop()

    @rule(max_items=st.integers(1, 8))
    def pop_many(self, max_items: int) -> None:
        if not self.model and self.is_closed:
            with pytest.raises(QueueClosed):
                self.q.pop_many(max_items)
            return
        expected = [self._take() for _ in range(min(max_items, len(self.model)))]
        assert self.q.pop_many(max_items) == expected

    @precondition(lambda self: not self.is_closed)
    @rule()
    def waiter(self) -> None:
        calls: list[int] = []
        registered = self.q.add_waiter(lambda: calls.append(1))
        assert registered is (len(self.model) == 0)
        if registered:
            # Leave no waiter behind for the other rules: wake it with a push and take the item back.
            self.q.try_push("wake")
            assert calls == [1]
            assert self.q.try_pop() == "wake"
            self.pushed += 1
            self.popped += 1

    @rule()
    def close(self) -> None:
        self.q.close()
        self.is_closed = True

    @invariant()
    def same_state(self) -> None:
        assert len(self.q) == len(self.model)
        assert self.q.closed is self.is_closed
        assert self.q.capacity == self.capacity
        assert self.q.stats() == {"pushed": self.pushed, "popped": self.popped, "rejected": self.rejected}


QueueMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestQueueModel = QueueMachine.TestCase
