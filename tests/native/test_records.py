"""RecordEncoder: the native task record is the JSON `orjson.dumps(task.to_dict())` gives."""

from __future__ import annotations

import datetime
import math
from typing import Any

import orjson
import pytest

from hulk._native import RecordEncoder
from hulk.engine.task import Task, TaskError, TaskStatus

ENCODER = RecordEncoder(Task, orjson.dumps)


def _task(**fields: Any) -> Task:
    task = Task("email.send", fields.pop("payload", {"to": "a@b.c"}), id="0193a8b2-7c1e-7d3a-9f00-0123456789ab")
    for name, value in fields.items():
        setattr(task, name, value)
    return task


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"status": TaskStatus.SUCCEEDED, "result": None, "created_at": 1796471848.8546174, "attempt": 1},
        {"payload": None, "result": [1, 2.5, None, True, False, "x"], "priority": -3, "timeout": 2.0},
        {"payload": {"s": 'quote " backslash \\ nl \n tab \t ctl \x01 é ✓'}, "tenant": "t/1"},
        {"result": {"big": 2**63, "neg": -(2**63), "huge": 1e300, "tiny": 5e-324, "nz": -0.0, "nan": math.nan}},
        {"payload": {"nested": {"a": [{"b": (1, 2)}]}}, "trace": {"traceparent": "00-ab-cd-01"}},
        {"status": TaskStatus.DEAD, "error": TaskError("TimeoutError", "took 2.0 s", "Traceback...")},
        {"idempotency_key": "k-1", "max_retries": 3, "run_at": 12.5, "cached": True},
        # Not plain JSON data: written by the fallback (orjson), as to_dict + orjson would.
        {"result": {"when": datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)}},
        {"result": {"deep": _nested(70)}},  # deeper than the native writer goes
    ],
)
def test_records_are_the_json_of_to_dict(fields: dict[str, Any]) -> None:
    task = _task(**fields)
    assert ENCODER.encode(task) == orjson.dumps(task.to_dict())


def test_values_json_cannot_hold_raise_the_fallbacks_error() -> None:
    with pytest.raises(TypeError):
        ENCODER.encode(_task(result=object()))
    with pytest.raises(TypeError):
        ENCODER.encode(_task(result=2**70))  # orjson: integer exceeds 64-bit range
    with pytest.raises(TypeError):
        ENCODER.encode(_task(result="\ud800"))  # a lone surrogate is not UTF-8
    with pytest.raises(TypeError):
        ENCODER.encode(_task(result={1: "int key"}))  # orjson: dict key must be str


def test_messages_pair_each_key_subject_with_its_record() -> None:
    tasks = [_task(), _task(status=TaskStatus.QUEUED)]
    tasks[1].id = "other-id"
    assert ENCODER.messages("$KV.hulk_status.", tasks) == [
        ("$KV.hulk_status." + task.id, orjson.dumps(task.to_dict())) for task in tasks
    ]
    assert ENCODER.messages("$KV.b.", []) == []


@pytest.mark.parametrize("bad", ["", ".lead", "trail.", "sp ace", "star*", "é"])
def test_an_id_that_cannot_be_a_key_is_refused_by_name(bad: str) -> None:
    task = _task()
    task.id = bad
    with pytest.raises(ValueError, match="valid KV key"):
        ENCODER.messages("$KV.b.", [task])


def test_only_task_records_are_encoded() -> None:
    with pytest.raises(TypeError, match="expected a task record"):
        ENCODER.encode(object())
    bare = Task.__new__(Task)  # every slot unset
    with pytest.raises(AttributeError):
        ENCODER.encode(bare)

    class NotATask:
        __slots__ = ("id",)

    with pytest.raises((TypeError, AttributeError)):
        RecordEncoder(NotATask, orjson.dumps)


def test_a_fallback_that_does_not_return_bytes_is_a_type_error() -> None:
    encoder = RecordEncoder(Task, lambda value: "not bytes")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError):
        encoder.encode(_task(result=object()))


def test_events_are_the_json_the_python_sink_writes() -> None:
    from hulk.messaging.engine_adapters import _KIND_BY_STATUS, _encode_events

    a = _task(attempt=1)
    b = _task(attempt=2, status=TaskStatus.DEAD, error=TaskError("ValueError", "boom", "tb"))
    b.id = "b-2"
    c = _task(attempt=1, status=TaskStatus.RETRYING)  # retrying without an error: no "error" key
    events = [
        (a, None, TaskStatus.QUEUED, 1796471848.25),
        (a, TaskStatus.QUEUED, TaskStatus.RUNNING, 1.5),
        (b, TaskStatus.RUNNING, TaskStatus.DEAD, 2.0),
        (a, TaskStatus.RUNNING, TaskStatus.SUCCEEDED, 1e300),
        (c, TaskStatus.RUNNING, TaskStatus.RETRYING, 3.0),
        (a, TaskStatus.RUNNING, "sideways", 4.0),  # a status with no kind: "updated"
    ]
    native = ENCODER.events(events, _KIND_BY_STATUS)
    assert native == _encode_events(events)
    assert set(native) == {"created", "started", "failed", "completed", "retrying", "updated"}
    failed, count = native["failed"]
    assert count == 1
    assert orjson.loads(b"[" + failed + b"]") == [
        {
            "task_id": "b-2",
            "type": "email.send",
            "tenant": "default",
            "attempt": 2,
            "at": 2.0,
            "error": "ValueError: boom",
        }
    ]
    assert ENCODER.events([], _KIND_BY_STATUS) == {}
    with pytest.raises(TypeError):
        ENCODER.events([(object(), None, TaskStatus.QUEUED, 1.0)], _KIND_BY_STATUS)
    with pytest.raises(TypeError, match=r"event 0 is not a \(task, previous, status, at\) tuple"):
        ENCODER.events([(a, None)], _KIND_BY_STATUS)  # type: ignore[list-item]


@pytest.mark.parametrize(
    "key",
    ["a", "0193a8b2-7c1e-7d3a", "a.b", "x/y=z_", "-", "", ".", ".a", "a.", "a b", "a*", "a>", "é", "١", "a\n"],
)
def test_kv_keys_follow_the_bucket_rule(key: str) -> None:
    import re

    from hulk._native import is_kv_key

    rule = re.compile(r"[-/_=a-zA-Z0-9](?:[-/_=.a-zA-Z0-9]*[-/_=a-zA-Z0-9])?")
    assert is_kv_key(key) is (rule.fullmatch(key) is not None)
