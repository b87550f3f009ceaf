from __future__ import annotations

import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy

from hulk.messaging.connection import NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.publisher import IntakeFull, TaskProducer
from hulk.messaging.streams import (
    BLUEPRINT_NAMES,
    STREAM_EVENTS,
    STREAM_TASKS,
    ConfigMismatch,
    StreamSettings,
    ensure_intake_consumer,
    ensure_streams,
    intake_consumer_config,
)
from tests.integration.messaging.conftest import ConnFactory


async def test_streams_are_created_as_documented(conn: NatsConnection) -> None:
    names = {si.config.name: si.config for si in await conn.js.streams_info()}
    assert set(names) == set(BLUEPRINT_NAMES.values())
    tasks = names[STREAM_TASKS]
    assert tasks.retention == RetentionPolicy.WORK_QUEUE
    assert tasks.discard == DiscardPolicy.NEW
    assert tasks.subjects == ["hulk.intake.>"]
    events = names[STREAM_EVENTS]
    assert set(events.subjects or []) == {"hulk.task.*", "hulk.scheduler.tick", "hulk.runtime.health"}
    # Every documented subject lands in exactly one stream.
    for subject, stream in [
        ("hulk.intake.email.send", STREAM_TASKS),
        ("hulk.task.created", STREAM_EVENTS),
        ("hulk.task.completed", STREAM_EVENTS),
        ("hulk.task.failed", STREAM_EVENTS),
        ("hulk.scheduler.tick", STREAM_EVENTS),
        ("hulk.runtime.health", STREAM_EVENTS),
        ("hulk.scheduler.delayed.x", "HULK_SCHEDULER_QUEUE"),
        ("hulk.scheduler.cron.x", "HULK_SCHEDULER_QUEUE"),
        ("hulk.errors.dead.email.send", "HULK_ERRORS"),
        ("hulk.errors.poison", "HULK_ERRORS"),
    ]:
        assert await conn.js.find_stream_name_by_subject(subject) == stream


async def test_ensure_is_idempotent_and_reports_drift(conn: NatsConnection) -> None:
    again = await ensure_streams(conn.js, StreamSettings())
    assert set(again.values()) == {"unchanged"}
    other = StreamSettings(max_age=600.0)
    with pytest.raises(ConfigMismatch) as info:
        await ensure_streams(conn.js, other)
    assert info.value.name == STREAM_EVENTS
    assert "max_age" in info.value.differences
    assert "max_age" in str(info.value)
    # Nothing was overwritten.
    si = await conn.js.stream_info(STREAM_EVENTS)
    assert si.config.max_age == StreamSettings().max_age
    report = await ensure_streams(conn.js, other, update=True)
    assert report[STREAM_EVENTS] == "updated"
    si = await conn.js.stream_info(STREAM_EVENTS)
    assert si.config.max_age == 600.0


async def test_consumer_ensure_reports_and_updates(conn: NatsConnection) -> None:
    cfg = intake_consumer_config(ack_wait=5, max_deliver=4, max_ack_pending=10)
    assert await ensure_intake_consumer(conn.js, cfg) == "created"
    assert await ensure_intake_consumer(conn.js, cfg) == "unchanged"
    bigger = intake_consumer_config(ack_wait=5, max_deliver=4, max_ack_pending=20)
    with pytest.raises(ConfigMismatch):
        await ensure_intake_consumer(conn.js, bigger)
    assert await ensure_intake_consumer(conn.js, bigger, update=True) == "updated"
    info = await conn.js.consumer_info(STREAM_TASKS, "hulk-workers")
    assert info.config.max_ack_pending == 20


async def test_duplicate_submissions_are_dropped(conn: NatsConnection) -> None:
    producer = TaskProducer(conn)
    first = await producer.submit(TaskEnvelope(type="echo", id="t-1", payload=1))
    again = await producer.submit(TaskEnvelope(type="echo", id="t-1", payload=1))
    keyed = await producer.submit(TaskEnvelope(type="echo", id="t-2", idempotency_key="k"))
    keyed_again = await producer.submit(TaskEnvelope(type="echo", id="t-3", idempotency_key="k"))
    assert not first.duplicate
    assert again.duplicate
    assert not keyed.duplicate
    assert keyed_again.duplicate
    si = await conn.js.stream_info(STREAM_TASKS)
    assert si.state.messages == 2


async def test_full_intake_refuses_new_tasks(make_conn: ConnFactory) -> None:
    c = await make_conn()
    await ensure_streams(c.js, StreamSettings(intake_max_msgs=3))
    producer = TaskProducer(c)
    for i in range(3):
        await producer.submit(TaskEnvelope(type="echo", payload=i))
    with pytest.raises(IntakeFull):
        await producer.submit(TaskEnvelope(type="echo"))
    with pytest.raises(IntakeFull):
        await producer.submit_many([TaskEnvelope(type="echo")])


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="replicas"):
        StreamSettings(replicas=0)
    with pytest.raises(ValueError, match="max_age"):
        StreamSettings(max_age=-1)
    with pytest.raises(ValueError, match="duplicate_window"):
        StreamSettings(duplicate_window=0)
    with pytest.raises(ValueError, match="storage"):
        StreamSettings(storage="disk")
    with pytest.raises(ValueError, match="duplicate_window"):
        StreamSettings(max_age=10, duplicate_window=20)
    with pytest.raises(ValueError, match="ack_wait"):
        intake_consumer_config(ack_wait=0, max_deliver=1, max_ack_pending=1)
    with pytest.raises(ValueError, match="max_deliver"):
        intake_consumer_config(ack_wait=1, max_deliver=0, max_ack_pending=1)
    with pytest.raises(ValueError, match="max_ack_pending"):
        intake_consumer_config(ack_wait=1, max_deliver=1, max_ack_pending=0)
