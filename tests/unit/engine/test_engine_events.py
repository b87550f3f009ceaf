"""Event sinks and transition names."""

from __future__ import annotations

from collections.abc import Sequence

from hulk.engine import (
    EventSink,
    FanoutSink,
    MemoryEventSink,
    NullEventSink,
    Task,
    TaskEvent,
    TaskStatus,
    event_kind,
)

S = TaskStatus


def test_event_kinds() -> None:
    assert event_kind(None, S.QUEUED) == "created"
    assert event_kind(None, S.SCHEDULED) == "created"
    assert event_kind(S.QUEUED, S.RUNNING) == "started"
    assert event_kind(S.RUNNING, S.SUCCEEDED) == "completed"
    assert event_kind(S.RUNNING, S.DEAD) == "failed"
    assert event_kind(S.RUNNING, S.RETRYING) == "retrying"
    assert event_kind(S.QUEUED, S.CANCELLED) == "cancelled"
    assert event_kind(S.RETRYING, S.QUEUED) == "queued"
    assert event_kind(S.QUEUED, S.SCHEDULED) == "scheduled"


def test_memory_sink_history_and_kinds() -> None:
    sink = MemoryEventSink(maxlen=10)
    a, b = Task("t", id="a"), Task("t", id="b")
    sink.publish([(a, None, S.QUEUED, 1.0), (b, None, S.QUEUED, 1.0), (a, S.QUEUED, S.RUNNING, 2.0)])
    assert sink.history("a") == [S.QUEUED, S.RUNNING]
    assert sink.kinds("a") == ["created", "started"]
    assert sink.batches == 1
    sink.clear()
    assert sink.history("a") == []


class Broken:
    def publish(self, events: Sequence[TaskEvent]) -> None:
        raise RuntimeError("sink down")


def test_fanout_isolates_a_broken_sink() -> None:
    good = MemoryEventSink()
    fan = FanoutSink([Broken(), good, NullEventSink()])
    fan.publish([(Task("t", id="x"), None, S.QUEUED, 0.0)])
    assert good.history("x") == [S.QUEUED]
    assert isinstance(fan, EventSink)
    assert isinstance(good, EventSink)
