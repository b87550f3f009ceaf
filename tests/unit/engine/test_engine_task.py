"""The task model: the transition table, checked pair by pair and against a reference model."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hulk.engine import TERMINAL, TRANSITIONS, IllegalTransition, Task, TaskError, TaskStatus, can_transition
from hulk.errors import HulkError

S = TaskStatus
ALL: list[TaskStatus | None] = [None, *TaskStatus]

# The reference: every legal move, written out by hand from the wording.
LEGAL = {
    (None, S.QUEUED),
    (None, S.SCHEDULED),
    (S.SCHEDULED, S.QUEUED),
    (S.SCHEDULED, S.CANCELLED),
    (S.QUEUED, S.QUEUED),
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.SCHEDULED),
    (S.QUEUED, S.DEAD),
    (S.QUEUED, S.CANCELLED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.RETRYING),
    (S.RUNNING, S.DEAD),
    (S.RUNNING, S.CANCELLED),
    (S.RETRYING, S.QUEUED),
    (S.RETRYING, S.CANCELLED),
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(ALL, list(TaskStatus))))
def test_every_pair_of_the_transition_table(source: TaskStatus | None, target: TaskStatus) -> None:
    task = Task("t", id="x")
    task.status = source
    legal = (source, target) in LEGAL
    assert can_transition(source, target) is legal
    if legal:
        assert task.transition(target) is source
        assert task.status is target
    else:
        with pytest.raises(IllegalTransition) as info:
            task.transition(target)
        assert task.status is source
        assert (info.value.source, info.value.target, info.value.task_id) == (source, target, "x")
        assert isinstance(info.value, HulkError)


def test_terminal_statuses_have_no_way_out() -> None:
    assert {S.SUCCEEDED, S.DEAD, S.CANCELLED} == TERMINAL
    assert all(not TRANSITIONS[status] for status in TERMINAL)


def test_round_trip_through_json() -> None:
    task = Task("email.send", {"to": "a"}, id="id1", tenant="t", idempotency_key="k", trace={"traceparent": "00-x"})
    task.status = S.DEAD
    task.attempt = 2
    task.error = TaskError("ValueError", "bad", "tb")
    data = orjson.loads(orjson.dumps(task.to_dict()))
    assert data["status"] == "dead"
    back = Task.from_dict(data)
    assert back.to_dict() == task.to_dict()
    assert back.status is S.DEAD
    assert back.error == task.error
    with pytest.raises(ValueError, match="bogus"):
        Task.from_dict({**data, "status": "bogus"})


def test_snapshot_is_detached() -> None:
    task = Task("t", [1], id="a")
    task.status = S.QUEUED
    copy = task.snapshot()
    task.status = S.RUNNING
    assert copy.status is S.QUEUED
    assert copy.payload == [1]
    assert copy.id == "a"
    assert "t" in repr(copy)
    assert not copy.done
    assert not copy.timed_out


def test_task_error_from_exception_is_short() -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("x" * 5000)
        deep(n - 1)

    try:
        deep(30)
    except ValueError as exc:
        error = TaskError.from_exception(exc)
    assert error.type == "ValueError"
    assert len(error.message) == 1000
    assert len(error.traceback) <= 2000
    assert error.traceback.count("in deep") <= 5
    assert TaskError.from_exception(RuntimeError("no tb")).traceback == ""


class TransitionMachine(RuleBasedStateMachine):
    """Random walks through the table: the task agrees with the reference at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.task = Task("t", id="m")
        self.model: TaskStatus | None = None

    @rule(status=st.sampled_from(list(TaskStatus)))
    def move(self, status: TaskStatus) -> None:
        if (self.model, status) in LEGAL:
            self.task.transition(status)
            self.model = status
        else:
            with pytest.raises(IllegalTransition):
                self.task.transition(status)

    @invariant()
    def agrees(self) -> None:
        assert self.task.status is self.model
        assert self.task.done == (self.model in TERMINAL)


TestTransitions = TransitionMachine.TestCase


def test_to_dict_has_every_field_once_with_plain_strings() -> None:
    task = Task("x", {"a": 1}, id="t1")
    task.status = TaskStatus.SUCCEEDED
    task.error = TaskError("ValueError", "no")
    data = task.to_dict()
    assert list(data) == [*Task._FIELDS, "error"]
    assert type(data["status"]) is str
    assert data["status"] == "succeeded"
    assert data["error"] == {"type": "ValueError", "message": "no", "traceback": ""}
    assert Task.from_dict(data).to_dict() == data
