from __future__ import annotations

import time

import orjson
import pytest

from hulk.messaging.connection import NatsConnection
from hulk.messaging.envelope import TaskEnvelope
from hulk.messaging.scheduler import PeriodicTask, Scheduler, schedule_task
from hulk.messaging.streams import STREAM_SCHEDULER, STREAM_TASKS
from tests.integration.messaging.conftest import ConnFactory
from tests.integration.messaging.helpers import eventually


async def test_one_leader_and_failover_within_two_leases(make_conn: ConnFactory, conn: NatsConnection) -> None:
    scheds = []
    for i in range(3):
        c = await make_conn()
        s = Scheduler(c, instance_id=f"i{i}", tick_interval=0.2, lease_ttl=1.0)
        await s.start()
        scheds.append(s)
    await eventually(lambda: sum(s.is_leader for s in scheds) == 1, 5)
    leader = next(s for s in scheds if s.is_leader)
    assert scheds[0].lease is not None
    assert await scheds[0].lease.current_holder() == leader.instance_id
    # Kill the leader's loops without releasing (a crash): the lease expires server-side.
    for t in leader._tasks:
        t.cancel()
    await leader._step_down()
    leader.lease.revision = None  # type: ignore[union-attr]
    lost_at = time.monotonic()
    others = [s for s in scheds if s is not leader]
    await eventually(lambda: sum(s.is_leader for s in others) == 1, 5)
    assert time.monotonic() - lost_at < 2 * 1.0 + 1.0  # two lease periods (+ one poll round)
    for s in scheds:
        await s.stop()


async def test_ticks_are_not_duplicated_in_split_brain(make_conn: ConnFactory, conn: NatsConnection) -> None:
    a = Scheduler(await make_conn(), instance_id="a", tick_interval=0.2, lease_ttl=1.0)
    b = Scheduler(await make_conn(), instance_id="b", tick_interval=0.2, lease_ttl=1.0)
    await a.start()
    await b.start()
    # Force both to act as leader at once.
    await eventually(lambda: a.is_leader or b.is_leader, 5)
    follower = b if a.is_leader else a
    await follower._step_up()
    await eventually(lambda: a.ticks >= 5 and b.ticks >= 5, 10)
    await follower._step_down()
    await a.stop()
    await b.stop()
    sub = await conn.js.pull_subscribe("hulk.scheduler.tick", stream="HULK_ENGINE_EVENTS")
    slots = []
    try:
        while True:
            for m in await sub.fetch(100, timeout=1):
                slots.append(orjson.loads(m.data)["slot"])
    except TimeoutError:
        pass
    assert len(slots) >= 5
    assert len(slots) == len(set(slots))


async def test_delayed_tasks_survive_restart_of_every_instance(make_conn: ConnFactory, conn: NatsConnection) -> None:
    now = time.time()
    for i in range(5):
        await schedule_task(conn, TaskEnvelope(type="later", id=f"d{i}", payload=i), run_at=now + 0.5)
    await schedule_task(conn, TaskEnvelope(type="later", id="far"), run_at=now + 3600)
    # No scheduler ran yet: the entries wait in the stream.
    si = await conn.js.stream_info(STREAM_SCHEDULER)
    assert si.state.messages == 6
    s = Scheduler(await make_conn(), instance_id="x", tick_interval=1, lease_ttl=1.0)
    await s.start()
    await eventually(lambda: s.fired == 5, 10)
    si = await conn.js.stream_info(STREAM_TASKS)
    assert si.state.messages == 5
    si = await conn.js.stream_info(STREAM_SCHEDULER)
    assert si.state.messages == 1
    await s.stop()


async def test_periodic_task_fires_once_per_period_across_instances(
    make_conn: ConnFactory, conn: NatsConnection
) -> None:
    scheds = [Scheduler(await make_conn(), instance_id=f"p{i}", tick_interval=1, lease_ttl=1.0) for i in range(2)]
    for s in scheds:
        await s.start()
    await scheds[0].add_periodic(PeriodicTask(name="every-sec", cron="* * * * * *", type="beat"))
    start = time.time()
    await eventually(lambda: sum(s.fired for s in scheds) >= 3, 10)
    await scheds[0].remove_periodic("every-sec")
    for s in scheds:
        await s.stop()
    elapsed = time.time() - start
    si = await conn.js.stream_info(STREAM_TASKS)
    # At most one per elapsed second (plus the period in progress), never two per period.
    assert 3 <= si.state.messages <= int(elapsed) + 2
    sub = await conn.js.pull_subscribe("hulk.intake.beat", stream=STREAM_TASKS)
    ids = [orjson.loads(m.data)["id"] for m in await sub.fetch(si.state.messages, timeout=2)]
    assert len(ids) == len(set(ids))


def test_periodic_task_validation() -> None:
    with pytest.raises(ValueError, match="cron"):
        PeriodicTask(name="x", cron="not cron", type="t")
    with pytest.raises(ValueError, match="name"):
        PeriodicTask(name="a.b", cron="* * * * *", type="t")
    p = PeriodicTask(name="x", cron="*/5 * * * *", type="t")
    assert p.next_after(0) == 300
    assert p.prev_at_or_before(601) == 600
