"""The cluster's scheduler: one leader (KV lease), ticks, delayed tasks and periodic (cron) tasks.

Leader election: the key `scheduler.leader` of the KV bucket `hulk_leases` holds the leader's id.
A candidate creates it if absent; the leader renews it by compare-and-swap on its revision with a
per-message TTL of `lease_ttl` (server-side expiry, nats-server 2.11+), every `lease_ttl / 3`. If
the leader dies, the key expires at most `lease_ttl` after its last renewal and the next candidate
round (every `lease_ttl / 3`) takes over: within two lease periods. A leader whose renewal fails
(revision moved, or NATS unreachable for a whole lease) steps down at once.

Ticks: the leader publishes `hulk.scheduler.tick` each `tick_interval`, aligned to the wall clock,
with `Nats-Msg-Id = tick:<interval>:<slot>`: a brief split brain emits no duplicate.

Delayed tasks (run at / run after) are messages on `hulk.scheduler.delayed.<task id>` in the
scheduler stream, with the due time in a header. Any instance can add one; the leader follows the
subject with an ordered consumer (no acks: nothing is held inside an ack window), keeps due times
in a heap, publishes each due task to its intake subject (with the task's `Nats-Msg-Id`, so a
double fire is dropped) and then deletes the entry. A restart of every instance loses none: the
entries are in the stream until fired.

Periodic tasks are messages on `hulk.scheduler.cron.<name>` (cron expression, task type, payload).
The leader computes the next fire time with croniter from the last fire time stored in the lease
bucket (`cron.<name>`), publishes the task with `Nats-Msg-Id = cron:<name>:<fire time>` and records
the fire time: one task per period across the cluster, even across leader changes (a period missed
while no leader ran fires once, late).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from croniter import croniter
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from hulk.messaging.connection import NatsConnection, cancel_and_wait
from hulk.messaging.envelope import HDR_MSG_ID, HDR_TASK_ID, HDR_TASK_TYPE, TaskEnvelope
from hulk.messaging.streams import (
    STREAM_SCHEDULER,
    SUBJECT_CRON_PREFIX,
    SUBJECT_DELAYED_PREFIX,
    SUBJECT_TICK,
    intake_subject,
)

__all__ = ["LeaderLease", "PeriodicTask", "Scheduler", "schedule_task"]

log = logging.getLogger("hulk.messaging")

HDR_RUN_AT = "Hulk-Run-At"
HDR_OP = "Hulk-Op"
HDR_IDEMPOTENCY = "Hulk-Idempotency-Key"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _token(value: str, what: str) -> str:
    if not _TOKEN_RE.match(value):
        raise ValueError(f"{what} must match [A-Za-z0-9_-]+ to be a subject token, got {value!r}")
    return value


async def schedule_task(conn: NatsConnection, task: TaskEnvelope, *, run_at: float) -> None:
    """Persists `task` to run at wall-clock time `run_at` (seconds since the epoch).

    Writing the same task id again replaces its entry. Safe from any instance; fired by the leader.
    """
    hdrs = task.to_headers()
    hdrs[HDR_RUN_AT] = repr(float(run_at))
    hdrs[HDR_TASK_ID] = task.id
    hdrs[HDR_TASK_TYPE] = task.type
    hdrs[HDR_IDEMPOTENCY] = task.msg_id
    hdrs[HDR_MSG_ID] = f"delay:{task.msg_id}:{run_at!r}"
    await conn.js.publish(f"{SUBJECT_DELAYED_PREFIX}.{_token(task.id, 'task id')}", task.body(), headers=hdrs)


@dataclass(frozen=True, kw_only=True)
class PeriodicTask:
    """A task fired once per cron period across the cluster.

    Args:
        name: unique name (a subject token).
        cron: cron expression (croniter syntax, UTC).
        type: task type.
        payload: JSON-serialisable arguments.
        tenant: tenant.

    """

    name: str
    cron: str
    type: str
    payload: Any = None
    tenant: str = "default"

    def __post_init__(self) -> None:
        _token(self.name, "name")
        if not croniter.is_valid(self.cron):
            raise ValueError(f"cron must be a valid cron expression, got {self.cron!r}")
        intake_subject(self.type)

    def next_after(self, ts: float) -> float:
        """The first fire time strictly after `ts` (epoch seconds)."""
        it = croniter(self.cron, datetime.fromtimestamp(ts, UTC))
        nxt: datetime = it.get_next(datetime)
        return nxt.timestamp()

    def prev_at_or_before(self, ts: float) -> float:
        """The last fire time at or before `ts`."""
        it = croniter(self.cron, datetime.fromtimestamp(ts + 1e-6, UTC))
        prev: datetime = it.get_prev(datetime)
        return prev.timestamp()


class LeaderLease:
    """A lease on one KV key: create if absent, renew by compare-and-swap, expire server-side.

    Args:
        kv: the lease bucket (its stream must allow per-message TTL).
        key: the lease key.
        holder: this instance's id.
        ttl: lease time to live in whole seconds (>= 1).

    """

    def __init__(self, kv: KeyValue, *, key: str, holder: str, ttl: float, js: Any) -> None:
        if ttl < 1:
            raise ValueError(f"lease ttl must be >= 1 s, got {ttl}")
        self._kv = kv
        self._js = js
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.revision: int | None = None

    @property
    def held(self) -> bool:
        """True while this instance holds the lease (as of the last round)."""
        return self.revision is not None

    async def try_acquire(self) -> bool:
        """Renews the lease if held, else takes it if free; returns whether it is held now."""
        value = orjson.dumps({"holder": self.holder, "ts": time.time()})
        if self.revision is not None:
            try:
                self.revision = await self._put(value, self.revision)
            except KeyWrongLastSequenceError:
                log.warning("scheduler: lease lost (revision moved)")
                self.revision = None
            return self.held
        try:
            self.revision = await self._put(value, 0)
        except KeyWrongLastSequenceError:
            self.revision = None
        return self.held

    async def _put(self, value: bytes, last: int, ttl: float | None = None) -> int:
        hdrs = {
            "Nats-Expected-Last-Subject-Sequence": str(last),
            "Nats-TTL": f"{int(ttl or self.ttl)}s",
        }
        try:
            ack = await self._js.publish(f"$KV.{self._kv._name}.{self.key}", value, headers=hdrs)
        except APIError as err:
            if err.err_code in (10071, 10164):
                raise KeyWrongLastSequenceError(description=err.description) from err
            raise
        return int(ack.seq)

    async def release(self) -> None:
        """Gives the lease up: rewrites it (if still ours) to expire within a second."""
        if self.revision is None:
            return
        rev, self.revision = self.revision, None
        with contextlib.suppress(Exception):
            await self._put(orjson.dumps({"holder": "", "ts": time.time()}), rev, ttl=1)

    async def current_holder(self) -> str | None:
        """The holder's id, or None when nobody holds it."""
        try:
            entry = await self._kv.get(self.key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        holder: str = orjson.loads(entry.value)["holder"]
        return holder or None


class Scheduler:
    """Leader election, ticks, delayed and periodic tasks of one instance.

    Args:
        conn: the NATS connection.
        instance_id: this instance's id (a subject-safe token).
        tick_interval: seconds between ticks.
        lease_ttl: leader lease in seconds (>= 1); a new leader takes over within two of them.
        bucket: KV bucket of the lease and the cron fire times.
        replicas: replicas of that bucket.

    """

    def __init__(
        self,
        conn: NatsConnection,
        *,
        instance_id: str,
        tick_interval: float = 1.0,
        lease_ttl: float = 5.0,
        bucket: str = "hulk_leases",
        replicas: int = 1,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError(f"tick_interval must be > 0, got {tick_interval}")
        self._conn = conn
        self.instance_id = instance_id
        self.tick_interval = tick_interval
        self.lease_ttl = lease_ttl
        self.bucket = bucket
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self.lease: LeaderLease | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self._heap: list[tuple[float, int]] = []
        self._delayed: dict[int, tuple[float, Msg]] = {}
        self._crons: dict[str, PeriodicTask] = {}
        self._wake = asyncio.Event()
        self.ticks = 0
        self.fired = 0
        self.became_leader = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        """True while this instance holds the leader lease."""
        return self.lease is not None and self.lease.held

    async def start(self) -> None:
        """Binds (or creates) the lease bucket and starts competing for leadership."""
        js = self._conn.js
        try:
            self._kv = await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            self._kv = await js.create_key_value(
                KeyValueConfig(bucket=self.bucket, history=1, replicas=self.replicas, storage=StorageType.FILE)
            )
        self.lease = LeaderLease(self._kv, key="scheduler.leader", holder=self.instance_id, ttl=self.lease_ttl, js=js)
        self._tasks = [asyncio.create_task(self._elect_loop(), name="hulk-scheduler-elect")]

    async def stop(self) -> None:
        """Stops competing; releases the lease so another instance takes over at once."""
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        await self._step_down()
        if self.lease is not None:
            await self.lease.release()

    # --- leadership ------------------------------------------------------------------------------

    async def _elect_loop(self) -> None:
        assert self.lease is not None
        period = self.lease_ttl / 3
        last_ok = time.monotonic()
        while True:
            was = self.lease.held
            try:
                held = await self.lease.try_acquire()
                last_ok = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("scheduler: lease round failed: %r", exc)
                held = self.lease.held and time.monotonic() - last_ok < self.lease_ttl
                if not held:
                    self.lease.revision = None
            if held and not was:
                log.info("scheduler: %s is the leader", self.instance_id)
                await self._step_up()
            elif was and not held:
                log.warning("scheduler: %s is no longer the leader", self.instance_id)
                await self._step_down()
            await asyncio.sleep(period)

    async def _step_up(self) -> None:
        self.became_leader.set()
        js = self._conn.js
        self._heap.clear()
        self._delayed.clear()
        self._crons.clear()
        for subject in (f"{SUBJECT_DELAYED_PREFIX}.*", f"{SUBJECT_CRON_PREFIX}.*"):
            self._subs.append(
                await js.subscribe(subject, stream=STREAM_SCHEDULER, ordered_consumer=True, cb=self._on_entry)
            )
        self._leader_tasks = [
            asyncio.create_task(self._tick_loop(), name="hulk-scheduler-tick"),
            asyncio.create_task(self._fire_loop(), name="hulk-scheduler-fire"),
        ]

    async def _step_down(self) -> None:
        self.became_leader.clear()
        for task in self._leader_tasks:
            await cancel_and_wait(task)
        self._leader_tasks = []
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 2.0)
        self._subs = []

    # --- entries ---------------------------------------------------------------------------------

    async def _on_entry(self, msg: Msg) -> None:
        hdrs = msg.headers or {}
        seq = msg.metadata.sequence.stream
        if msg.subject.startswith(SUBJECT_CRON_PREFIX + "."):
            name = msg.subject[len(SUBJECT_CRON_PREFIX) + 1 :]
            if hdrs.get(HDR_OP) == "DEL" or not msg.data:
                self._crons.pop(name, None)
            else:
                try:
                    self._crons[name] = PeriodicTask(**orjson.loads(msg.data))
                except (ValueError, TypeError) as exc:
                    log.warning("scheduler: ignoring bad periodic task %s: %s", name, exc)
        else:
            try:
                run_at = float(hdrs[HDR_RUN_AT])
            except (KeyError, ValueError):
                log.warning("scheduler: delayed entry %d has no valid %s", seq, HDR_RUN_AT)
                return
            self._delayed[seq] = (run_at, msg)
            heapq.heappush(self._heap, (run_at, seq))
        self._wake.set()

    async def add_periodic(self, task: PeriodicTask) -> None:
        """Persists a periodic task (replacing one of the same name). Safe from any instance."""
        body = orjson.dumps(
            {"name": task.name, "cron": task.cron, "type": task.type, "payload": task.payload, "tenant": task.tenant}
        )
        await self._conn.js.publish(f"{SUBJECT_CRON_PREFIX}.{task.name}", body)

    async def remove_periodic(self, name: str) -> None:
        """Removes a periodic task."""
        await self._conn.js.publish(f"{SUBJECT_CRON_PREFIX}.{_token(name, 'name')}", b"", headers={HDR_OP: "DEL"})

    # --- leader loops ----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        js = self._conn.js
        interval = self.tick_interval
        while True:
            now = time.time()
            slot = int(now // interval) + 1
            await asyncio.sleep(max(0.0, slot * interval - time.time()))
            body = orjson.dumps({"slot": slot, "ts": slot * interval, "leader": self.instance_id})
            try:
                await js.publish(SUBJECT_TICK, body, headers={HDR_MSG_ID: f"tick:{interval!r}:{slot}"})
                self.ticks += 1
            except Exception as exc:
                log.debug("scheduler: tick %d not published: %r", slot, exc)

    async def _fire_loop(self) -> None:
        while True:
            now = time.time()
            await self._fire_delayed(now)
            await self._fire_crons(now)
            nxt = self._heap[0][0] if self._heap else now + 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(1.0, max(0.0, nxt - time.time())))

    async def _fire_delayed(self, now: float) -> None:
        js = self._conn.js
        while self._heap and self._heap[0][0] <= now:
            run_at, seq = heapq.heappop(self._heap)
            item = self._delayed.pop(seq, None)
            if item is None:
                continue
            msg = item[1]
            hdrs = dict(msg.headers or {})
            task_type = hdrs.pop(HDR_TASK_TYPE, "")
            task_id = hdrs.pop(HDR_TASK_ID, "")
            hdrs.pop(HDR_RUN_AT, None)
            hdrs[HDR_MSG_ID] = hdrs.pop(HDR_IDEMPOTENCY, "") or f"{task_id}:at:{run_at!r}"
            try:
                await js.publish(intake_subject(task_type), msg.data, headers=hdrs)
                with contextlib.suppress(NotFoundError, APIError):
                    await js.delete_msg(STREAM_SCHEDULER, seq)
                self.fired += 1
            except Exception as exc:
                log.warning("scheduler: delayed task %s not fired yet: %r", task_id, exc)
                self._delayed[seq] = item
                heapq.heappush(self._heap, (run_at, seq))
                return

    async def _fire_crons(self, now: float) -> None:
        assert self._kv is not None
        for name, task in list(self._crons.items()):
            key = f"cron.{name}"
            try:
                entry = await self._kv.get(key)
                last = float(orjson.loads(entry.value or b"0"))
            except KeyNotFoundError:
                last = task.prev_at_or_before(now)
                await self._kv.put(key, orjson.dumps(last))
                continue
            due = task.next_after(last)
            if due > now:
                continue
            fire = task.prev_at_or_before(now)  # missed periods fire once, late
            env = TaskEnvelope(
                type=task.type,
                payload=task.payload,
                id=f"{name}-{int(fire)}",
                tenant=task.tenant,
                idempotency_key=f"cron:{name}:{fire!r}",
            )
            try:
                await self._conn.js.publish(intake_subject(task.type), env.body(), headers=env.to_headers())
                await self._kv.put(key, orjson.dumps(fire))
                self.fired += 1
            except Exception as exc:
                log.warning("scheduler: periodic %s not fired yet: %r", name, exc)
