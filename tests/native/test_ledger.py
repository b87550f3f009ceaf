"""The engine's native ledger: task records, events, metrics and breaker in one call per transition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from hulk._native import (
    BoundedQueue,
    CircuitBreaker,
    Counter,
    EventBatch,
    EventBuffer,
    Histogram,
    IdStream,
    TaskMaker,
    TypeLedger,
    distinct_tasks,
    tasks_entering,
    tasks_not_in,
)
from hulk.engine import IdGenerator, Task, TaskStatus
from hulk.errors import QueueClosed

S = TaskStatus


class Parts:
    """A ledger and everything it writes to, for one test."""

    def __init__(self, capacity: int = 4, breaker: CircuitBreaker | None = None) -> None:
        self.queue = BoundedQueue(capacity)
        self.submitted, self.started, self.succeeded = Counter(), Counter(), Counter()
        self.latency = Histogram(buckets=[0.001, 1.0])
        self.duration = Histogram(buckets=[0.001, 1.0])
        self.pending = EventBuffer()
        self.fresh: list[Any] = []
        self.live: dict[str, Any] = {}
        self.runtime = object()
        self.ids = IdStream(IdGenerator(seed=1))
        self.ledger = self.make_ledger(Task, breaker)

    def make_ledger(self, task_class: type, breaker: CircuitBreaker | None = None) -> TypeLedger:
        """A ledger of `task_class` writing to these parts."""
        return TypeLedger(
            queue=self.queue,
            submitted=self.submitted,
            started=self.started,
            succeeded=self.succeeded,
            latency=self.latency,
            duration=self.duration,
            task_class=task_class,
            runtime=self.runtime,
            type_name="t",
            retries=3,
            timeout=5.0,
            statuses=(S.QUEUED, S.RUNNING, S.SUCCEEDED),
            pending=self.pending,
            fresh=self.fresh,
            live=self.live,
            ids=self.ids,
            breaker=breaker,
        )

    def accept(
        self,
        payload: Any = None,
        wall: float | None = 100.0,
        *,
        tenant: str = "default",
        key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        trace: dict[str, str] | None = None,
    ) -> Any:
        return self.ledger.accept(payload, wall, tenant, key, retries, timeout, priority, trace)


def test_accept_makes_a_whole_queued_record_and_its_event() -> None:
    parts = Parts()
    task = parts.accept({"a": 1}, tenant="t1", key="k", retries=1, priority=7, trace={"traceparent": "x"})
    assert type(task) is Task
    assert task.to_dict() == {
        "id": task.id,
        "type": "t",
        "payload": {"a": 1},
        "tenant": "t1",
        "idempotency_key": "k",
        "attempt": 0,
        "max_retries": 1,
        "timeout": 5.0,
        "priority": 7,
        "status": "queued",
        "created_at": 100.0,
        "queued_at": 100.0,
        "started_at": None,
        "finished_at": None,
        "run_at": None,
        "trace": {"traceparent": "x"},
        "result": None,
        "cached": False,
        "error": None,
    }
    assert task._rt is parts.runtime
    assert task._delivery is None
    assert task._sched is None
    assert uuid.UUID(task.id).version == 7
    assert parts.queue.try_pop() is task
    assert parts.submitted.value == 1
    assert list(parts.pending.take()) == [(task, None, S.QUEUED, 100.0)]
    assert parts.fresh == [task]
    assert parts.live == {}  # filed lazily by the pool


def test_accept_takes_defaults_and_reads_the_clock_when_no_time_is_given() -> None:
    parts = Parts()
    before = time.time()
    task = parts.accept(wall=None)
    assert before <= task.created_at <= time.time()
    assert (task.max_retries, task.timeout) == (3, 5.0)


def test_a_full_queue_keeps_nothing() -> None:
    parts = Parts(capacity=1)
    assert parts.accept() is not None
    assert parts.accept() is None
    assert parts.submitted.value == 1
    assert len(parts.pending) == len(parts.fresh) == 1
    parts.queue.close()
    with pytest.raises(QueueClosed):
        parts.accept()


def test_accept_many_stops_at_a_full_queue_and_shares_the_time() -> None:
    parts = Parts(capacity=3)
    tasks = parts.ledger.accept_many([1, 2, 3, 4], 50.0, "default", None, None, 0, None)
    assert [t.payload for t in tasks] == [1, 2, 3]
    assert {t.created_at for t in tasks} == {50.0}
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)
    assert parts.submitted.value == 3


def test_begin_and_succeed_move_the_record_and_keep_the_books() -> None:
    parts = Parts(breaker=CircuitBreaker(name="b"))
    task = parts.accept(wall=100.0)
    parts.live[task.id] = task
    assert parts.ledger.begin(task, 10.0, 90.5) == 1  # starts at Unix 100.5
    assert (task.status, task.attempt, task.started_at) == (S.RUNNING, 1, 100.5)
    assert parts.started.value == 1
    assert parts.latency.snapshot()["sum"] == pytest.approx(0.5)
    assert parts.ledger.succeed(task, {"ok": True}, 10.25, 90.5) is False
    assert (task.status, task.result, task.finished_at) == (S.SUCCEEDED, {"ok": True}, 100.75)
    assert parts.succeeded.value == 1
    assert parts.duration.snapshot()["sum"] == pytest.approx(0.25)
    assert parts.live == {}
    assert parts.pending.take()[1:] == [(task, S.QUEUED, S.RUNNING, 100.5), (task, S.RUNNING, S.SUCCEEDED, 100.75)]


def test_begin_says_when_a_task_carries_a_trace_or_is_no_longer_queued() -> None:
    parts = Parts()
    traced = parts.accept(trace={"traceparent": "x"})
    assert parts.ledger.begin(traced, 1.0, 0.0) == 2
    cancelled = parts.accept()
    cancelled.status = S.CANCELLED
    assert parts.ledger.begin(cancelled, 1.0, 0.0) == -1
    assert cancelled.attempt == 0
    assert parts.started.value == 1


def test_an_open_breaker_refuses_and_nothing_moves() -> None:
    breaker = CircuitBreaker(name="b", wait_open=60.0)
    parts = Parts(breaker=breaker)
    task = parts.accept()
    breaker.force_open(now=0.0)
    assert parts.ledger.begin(task, 1.0, 0.0) == 0
    assert (task.status, task.attempt) == (S.QUEUED, 0)
    assert parts.started.value == 0
    assert breaker.metrics(1.0)["rejected"] == 1


def test_a_cached_success_frees_the_probe_without_evidence() -> None:
    breaker = CircuitBreaker(name="b")
    parts = Parts(breaker=breaker)
    task = parts.accept()
    parts.ledger.begin(task, 1.0, 0.0)
    task.cached = True
    parts.ledger.succeed(task, 1, 2.0, 0.0)
    assert breaker.metrics(2.0)["calls"] == 0
    plain = parts.accept()
    parts.ledger.begin(plain, 1.0, 0.0)
    parts.ledger.succeed(plain, 1, 2.0, 0.0)
    assert breaker.metrics(2.0)["calls"] == 1


def test_succeed_tells_when_a_delivery_waits() -> None:
    parts = Parts()
    task = parts.accept()
    parts.ledger.begin(task, 1.0, 0.0)
    task._delivery = object()
    assert parts.ledger.succeed(task, None, 2.0, 0.0) is True


def test_push_queues_an_existing_task_and_counts_it() -> None:
    parts = Parts(capacity=1)
    assert parts.ledger.push(Task("t"))
    assert not parts.ledger.push(Task("t"))
    assert parts.submitted.value == 1


def test_calls_check_their_arguments() -> None:
    parts = Parts()
    task = parts.accept()
    with pytest.raises(TypeError, match="task record"):
        parts.ledger.begin(object(), 1.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        parts.ledger.begin(task, float("nan"), 0.0)
    with pytest.raises(ValueError, match="finite"):
        parts.ledger.succeed(task, None, 1.0, float("inf"))
    with pytest.raises(ValueError, match="finite"):
        parts.accept(wall=float("inf"))
    del task.queued_at
    with pytest.raises(AttributeError):
        parts.ledger.begin(task, 1.0, 0.0)


def test_the_task_class_must_have_the_fields_as_slots() -> None:
    class Plain:
        pass

    class Partial:
        __slots__ = ("id",)

    parts = Parts()
    for cls in (Plain, Partial):
        with pytest.raises((TypeError, AttributeError)):
            parts.make_ledger(cls)


def test_id_stream_takes_whole_blocks_in_order_and_renews_stale_ones() -> None:
    gen = IdGenerator(seed=9, max_age=0.002)
    stream = IdStream(gen)
    ids = [stream.next_id(1000.0) for _ in range(600)]  # three blocks within one millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == 600
    assert all(uuid.UUID(i).version == 7 for i in ids)
    later = stream.next_id(1000.003)  # the block expired: a new millisecond
    assert later > ids[-1]
    assert uuid.UUID(later).int >> 80 == 1_000_003
    with pytest.raises(ValueError, match="finite"):
        stream.next_id(float("nan"))


def test_id_stream_refuses_a_non_ascii_head() -> None:
    class Odd:
        def block(self, wall: float) -> tuple[str, float]:
            return "é" * 34, wall + 1.0

    with pytest.raises(ValueError, match="ASCII"):
        IdStream(Odd()).next_id(1.0)


def test_tasks_entering_picks_by_identity_in_order() -> None:
    a, b, c = Task("a"), Task("b"), Task("c")
    events = [(a, None, S.QUEUED, 1.0), (b, S.RUNNING, S.SUCCEEDED, 2.0), (c, S.RUNNING, S.DEAD, 3.0)]
    assert tasks_entering(events, (S.SUCCEEDED, S.DEAD)) == [b, c]
    assert tasks_entering(iter(events), (S.QUEUED,)) == [a]
    assert tasks_entering([], (S.QUEUED,)) == []
    malformed: list[Any] = [(a, None, S.QUEUED, 1.0), (b,)]
    with pytest.raises(TypeError, match="event 1"):
        tasks_entering(malformed, (S.QUEUED,))


def test_event_buffer_hands_over_its_events_as_a_batch_of_tuples() -> None:
    a, b = Task("a"), Task("b")
    buffer = EventBuffer()
    assert not buffer
    buffer.append(a, None, S.QUEUED, 1.0)
    buffer.append(b, S.RUNNING, S.SUCCEEDED, 2.0)
    assert len(buffer) == 2
    batch = buffer.take()
    assert not buffer  # emptied; the batch keeps the events
    buffer.append(a, S.QUEUED, S.RUNNING, 3.0)
    assert isinstance(batch, EventBatch)
    assert isinstance(batch, Sequence)
    assert len(batch) == 2
    assert list(batch) == [(a, None, S.QUEUED, 1.0), (b, S.RUNNING, S.SUCCEEDED, 2.0)]
    assert batch[0] == (a, None, S.QUEUED, 1.0)
    assert batch[-1] == (b, S.RUNNING, S.SUCCEEDED, 2.0)
    assert batch[1:] == [(b, S.RUNNING, S.SUCCEEDED, 2.0)]
    assert batch[::-1] == [(b, S.RUNNING, S.SUCCEEDED, 2.0), (a, None, S.QUEUED, 1.0)]
    for task, previous, status, at in batch:
        assert task in (a, b)
        assert previous in (None, S.RUNNING)
        assert status in (S.QUEUED, S.SUCCEEDED)
        assert at in (1.0, 2.0)
    with pytest.raises(IndexError, match="index 2 out of range for 2 events"):
        batch[2]
    with pytest.raises(IndexError):
        batch[-3]
    with pytest.raises(TypeError):
        batch["0"]  # type: ignore[call-overload]
    assert tasks_entering(batch, (S.SUCCEEDED,)) == [b]
    assert list(buffer.take()) == [(a, S.QUEUED, S.RUNNING, 3.0)]
    assert "2 events" in repr(batch)


def test_distinct_tasks_keeps_each_task_once_in_order_of_first_appearance() -> None:
    a, b = Task("a"), Task("b")
    events = [(a, None, S.QUEUED, 1.0), (b, None, S.QUEUED, 1.0), (a, S.QUEUED, S.RUNNING, 2.0)]
    assert distinct_tasks(events) == [a, b]
    buffer = EventBuffer()
    for event in events:
        buffer.append(*event)
    assert distinct_tasks(buffer.take()) == [a, b]
    assert distinct_tasks([]) == []
    with pytest.raises(TypeError, match="event 0"):
        distinct_tasks([(a,)])  # type: ignore[arg-type]


def test_task_maker_makes_what_the_task_class_makes() -> None:
    fields = Task.__slots__
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (
            ("t", {"n": 1}),
            {
                "id": "a",
                "tenant": "x",
                "idempotency_key": "k",
                "max_retries": 3,
                "timeout": 2.5,
                "priority": 4,
                "trace": {"traceparent": "00"},
                "created_at": 12.5,
            },
        ),
        (
            ("t", None),
            {
                "id": "b",
                "tenant": "default",
                "idempotency_key": None,
                "max_retries": None,
                "timeout": None,
                "priority": 0,
                "trace": None,
                "created_at": 0.0,
            },
        ),
    ]
    for args, kwargs in cases:
        made = TaskMaker(Task).make(*args, *kwargs.values())
        expected = Task(*args, **kwargs)
        assert type(made) is Task
        assert {f: getattr(made, f) for f in fields} == {f: getattr(expected, f) for f in fields}
    with pytest.raises(TypeError, match="not a __slots__ field"):
        TaskMaker(int)


def test_tasks_not_in_keeps_the_others() -> None:
    a, b = Task("a"), Task("b")
    a.status, b.status = S.SUCCEEDED, S.RUNNING
    assert tasks_not_in([a, b], (S.SUCCEEDED, S.DEAD, S.CANCELLED)) == [b]
