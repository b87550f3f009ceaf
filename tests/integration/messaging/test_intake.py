from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest

from hulk.messaging.connection import NatsConnection
from hulk.messaging.envelope import HDR_ERROR, HDR_REASON, TaskEnvelope
from hulk.messaging.intake import Intake, NatsDelivery, consumer_exists
from hulk.messaging.publisher import TaskProducer
from hulk.messaging.streams import STREAM_TASKS, intake_consumer_config
from tests.integration.messaging.conftest import ConnFactory
from tests.integration.messaging.helpers import eventually, stream_drained
from tests.nats_servers import NatsServer

Work = Callable[[NatsDelivery], Coroutine[Any, Any, None]]


def make_intake(
    conn: NatsConnection, work: Work, *, slots: int = 8, ack_wait: float = 5.0, attempts: int = 3, **kwargs: Any
) -> Intake:
    tasks: set[asyncio.Task[None]] = set()

    def handler(d: NatsDelivery) -> None:
        t = asyncio.create_task(work(d))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    cfg = intake_consumer_config(ack_wait=ack_wait, max_deliver=attempts + 1, max_ack_pending=64)
    return Intake(
        conn,
        handler,
        slots=slots,
        consumer_config=cfg,
        max_attempts=attempts,
        heartbeat=0.25,
        pull_expires=2.0,
        **kwargs,
    )


async def dead_letters(conn: NatsConnection, subject: str, n: int) -> list[tuple[bytes, dict[str, str]]]:
    sub = await conn.js.pull_subscribe(subject, stream="HULK_ERRORS")
    out: list[tuple[bytes, dict[str, str]]] = []
    while len(out) < n:
        for m in await sub.fetch(n - len(out), timeout=5):
            out.append((m.data, dict(m.headers or {})))
            await m.ack()
    return out


async def test_ten_thousand_tasks_two_instances_each_once(make_conn: ConnFactory, conn: NatsConnection) -> None:
    n = 10_000
    seen: Counter[str] = Counter()
    per_instance: Counter[int] = Counter()
    done = asyncio.Event()

    def worker(idx: int) -> Work:
        async def work(d: NatsDelivery) -> None:
            seen[d.task.id] += 1
            per_instance[idx] += 1
            await d.ack()
            if len(seen) == n:
                done.set()

        return work

    intakes = []
    for i in range(2):
        c = await make_conn()
        intakes.append(make_intake(c, worker(i), slots=64))
    for it in intakes:
        await it.start()
    await TaskProducer(conn).submit_many([TaskEnvelope(type="echo", id=f"t{i}", payload=i) for i in range(n)])
    await asyncio.wait_for(done.wait(), 100)
    for it in intakes:
        assert await it.drain(5)
        await it.stop()
    assert len(seen) == n
    assert set(seen.values()) == {1}
    assert per_instance[0] > 0
    assert per_instance[1] > 0
    await stream_drained(conn, STREAM_TASKS)


async def test_fetches_only_for_free_slots(conn: NatsConnection) -> None:
    gate = asyncio.Event()
    running: list[NatsDelivery] = []
    high = 0
    started = asyncio.Event()

    async def work(d: NatsDelivery) -> None:
        nonlocal high
        running.append(d)
        high = max(high, intake.owned)
        if len(running) >= 3:
            started.set()
        await gate.wait()
        await d.ack()

    def capacity() -> int:  # an engine with 3 workers: its free slots
        return 3 - intake.owned

    intake: Intake = make_intake(conn, work, slots=5, capacity=capacity)
    await intake.start()
    await TaskProducer(conn).submit_many([TaskEnvelope(type="echo", payload=i) for i in range(20)])
    await asyncio.wait_for(started.wait(), 10)
    info = await conn.js.consumer_info(STREAM_TASKS, "hulk-workers")
    assert info.num_ack_pending == 3
    assert intake.owned == 3
    assert intake.free_slots == 2  # the intake's own slots; the engine's capacity held it at 3
    assert intake.healthy
    gate.set()
    await eventually(lambda: intake.received >= 20, 10)
    assert await intake.drain(10)
    assert high <= 3
    await intake.stop()


async def test_poison_is_dead_lettered_at_once(conn: NatsConnection) -> None:
    async def work(d: NatsDelivery) -> None:
        raise AssertionError("poison must not run")

    intake = make_intake(conn, work)
    await intake.start()
    await conn.js.publish("hulk.intake.echo", b"{not json", headers={"X-Trace": "1"})
    await conn.js.publish("hulk.intake.echo", orjson.dumps([1, 2]))
    letters = await dead_letters(conn, "hulk.errors.poison", 2)
    assert letters[0][0] == b"{not json"
    assert letters[0][1]["X-Trace"] == "1"
    assert letters[0][1][HDR_REASON].startswith("poison")
    assert intake.dead_lettered == 2
    await intake.stop()
    await stream_drained(conn, STREAM_TASKS)


async def test_retries_then_dead_letter_with_reason_and_error(conn: NatsConnection) -> None:
    attempts: list[int] = []

    async def work(d: NatsDelivery) -> None:
        attempts.append(d.attempt)
        if d.attempt < 3:
            await d.nak(0.05)
        else:
            await d.term("retries exhausted", "ValueError: boom")

    intake = make_intake(conn, work)
    await intake.start()
    await TaskProducer(conn).submit(TaskEnvelope(type="mail.send", id="r1", payload={"to": "x"}))
    letters = await dead_letters(conn, "hulk.errors.dead.mail.send", 1)
    body, hdrs = letters[0]
    assert orjson.loads(body)["id"] == "r1"
    assert hdrs[HDR_REASON] == "retries exhausted"
    assert hdrs[HDR_ERROR] == "ValueError: boom"
    assert hdrs["Hulk-Task-Id"] == "r1"
    assert attempts == [1, 2, 3]
    await intake.stop()


async def test_crash_loop_is_capped_by_delivery_count(conn: NatsConnection) -> None:
    seen: list[int] = []

    async def work(d: NatsDelivery) -> None:
        seen.append(d.attempt)
        # Never settles: as if the instance died mid-task; the ack wait redelivers it.
        intake._release(d)
        d.settled = True

    intake = make_intake(conn, work, ack_wait=0.5, attempts=2, progress_interval=100.0)
    await intake.start()
    await TaskProducer(conn).submit(TaskEnvelope(type="crash", id="c1"))
    letters = await dead_letters(conn, "hulk.errors.dead.crash", 1)
    assert letters[0][1][HDR_REASON] == "delivery limit reached"
    assert seen == [1, 2]
    await intake.stop()


async def test_progress_acks_keep_a_long_task(conn: NatsConnection) -> None:
    deliveries: list[int] = []
    finished = asyncio.Event()

    async def work(d: NatsDelivery) -> None:
        deliveries.append(d.deliveries)
        await asyncio.sleep(2.0)  # the task itself runs 4x the ack wait
        await d.ack()
        finished.set()

    intake = make_intake(conn, work, ack_wait=0.5)
    await intake.start()
    await TaskProducer(conn).submit(TaskEnvelope(type="slow"))
    await asyncio.wait_for(finished.wait(), 10)
    assert deliveries == [1]
    await intake.stop()


async def test_defer_without_scheduler_naks(conn: NatsConnection) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def work(d: NatsDelivery) -> None:
        seen.append(d.deliveries)
        if d.deliveries == 1:
            await d.defer(0.05)
        else:
            await d.ack()
            done.set()

    intake = make_intake(conn, work)
    await intake.start()
    await TaskProducer(conn).submit(TaskEnvelope(type="echo"))
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [1, 2]
    await intake.stop()


async def test_intake_survives_server_restart(nats_server: NatsServer, conn: NatsConnection) -> None:
    got: set[str] = set()
    done = asyncio.Event()

    async def work(d: NatsDelivery) -> None:
        got.add(d.task.id)
        await d.ack()
        if len(got) == 2:
            done.set()

    intake = make_intake(conn, work)
    await intake.start()
    producer = TaskProducer(conn)
    await producer.submit(TaskEnvelope(type="echo", id="before"))
    await nats_server.stop_async()
    assert not intake.healthy or not conn.connected
    await nats_server.start_async()
    await conn.wait_connected(10)
    await producer.submit(TaskEnvelope(type="echo", id="after"))
    await asyncio.wait_for(done.wait(), 20)
    assert got == {"before", "after"}
    assert intake.resets >= 1
    assert await consumer_exists(conn)
    await intake.stop()


def test_intake_validates_arguments(conn: NatsConnection) -> None:
    cfg = intake_consumer_config(ack_wait=1, max_deliver=2, max_ack_pending=1)
    with pytest.raises(ValueError, match="slots"):
        Intake(conn, lambda d: None, slots=0, consumer_config=cfg, max_attempts=1)
    with pytest.raises(ValueError, match="max_attempts"):
        Intake(conn, lambda d: None, slots=1, consumer_config=cfg, max_attempts=0)
    with pytest.raises(ValueError, match="heartbeat"):
        Intake(conn, lambda d: None, slots=1, consumer_config=cfg, max_attempts=1, heartbeat=3, pull_expires=5)


async def test_bulk_batch_message_settles_each_task(conn: NatsConnection) -> None:
    outcomes: Counter[str] = Counter()
    done = asyncio.Event()

    async def work(d: NatsDelivery) -> None:
        n = int(d.task.payload)
        if n == 3 and d.attempt == 1:
            await d.nak(0.01)  # re-published alone
            outcomes["retried"] += 1
        elif n == 5:
            await d.term("bad input", "ValueError: 5")
            outcomes["dead"] += 1
        elif n == 7 and not outcomes["deferred"]:
            assert d.attempt == 1
            await d.defer(0.01)  # attempts unchanged: the redelivered copy is attempt 1 again
            outcomes["deferred"] += 1
        else:
            await d.in_progress()
            await d.ack()
            outcomes["ok"] += 1
        if outcomes["ok"] == 9:
            done.set()

    intake = make_intake(conn, work, slots=2)
    await intake.start()
    producer = TaskProducer(conn)
    tasks = [TaskEnvelope(type="bulk", id=f"b{i}", payload=i) for i in range(10)]
    res = await producer.submit_batch(tasks, batch_id="batch-1")
    assert not res.duplicate
    assert (await producer.submit_batch(tasks, batch_id="batch-1")).duplicate
    await asyncio.wait_for(done.wait(), 20)
    assert outcomes == Counter(ok=9, retried=1, deferred=1, dead=1)
    letters = await dead_letters(conn, "hulk.errors.dead.bulk", 1)
    assert orjson.loads(letters[0][0])["id"] == "b5"
    assert letters[0][1][HDR_ERROR] == "ValueError: 5"
    await eventually(lambda: intake.owned == 0, 10)
    await stream_drained(conn, STREAM_TASKS)
    with pytest.raises(ValueError, match="empty"):
        await producer.submit_batch([])
    with pytest.raises(ValueError, match="one type"):
        await producer.submit_batch([TaskEnvelope(type="a"), TaskEnvelope(type="b")])
    await intake.stop()


async def test_bulk_poison_batch(conn: NatsConnection) -> None:
    async def work(d: NatsDelivery) -> None:
        raise AssertionError("must not run")

    intake = make_intake(conn, work)
    await intake.start()
    await conn.js.publish("hulk.intake.bulk", b'{"not": "a list"}', headers={"Hulk-Batch": "1"})
    letters = await dead_letters(conn, "hulk.errors.poison", 1)
    assert letters[0][1][HDR_REASON].startswith("poison")
    await intake.stop()
