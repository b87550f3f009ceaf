"""Task status and results in a JetStream key-value bucket, readable from every instance.

One key per task id, one JSON record per key (history 1), expiring after the bucket's TTL. `wait`
subscribes to the key's subject before it reads the key, so an update that lands in between is
not missed, then waits for a record whose status is terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from hulk._native import RecordEncoder, is_kv_key
from hulk.engine.task import Task
from hulk.messaging.connection import NatsConnection
from hulk.messaging.pipeline import AckPipeline

if TYPE_CHECKING:
    from hulk.messaging.publisher import EventPublisher

__all__ = ["RECORD_ENCODER", "TERMINAL_STATUSES", "WRONG_LAST_SEQUENCE", "NatsStatusStore", "is_valid_key"]

WRONG_LAST_SEQUENCE = 10071
"""JetStream's err_code for a create whose key already has a record."""

TERMINAL_STATUSES = frozenset({"succeeded", "dead", "cancelled", "failed"})
"""Statuses after which a task changes no more (`wait` returns on them)."""

is_valid_key = is_kv_key
"""True when a string can be a KV key (and so a task id): [-/_=.a-zA-Z0-9]+, not starting or ending
with a dot. Native (`hulk._native.is_kv_key`): it runs for every task read from the intake."""


# Task records as JSON, written natively from the task's slots (the same bytes as
# `orjson.dumps(task.to_dict())`; see rust/src/records.rs); orjson writes what it does not.
RECORD_ENCODER = RecordEncoder(Task, orjson.dumps)
"""Writes engine tasks' records (and their events, for the event sink) as JSON."""


def _check_key(task_id: str) -> str:
    if not is_kv_key(task_id):
        raise ValueError(
            f"task_id must be a valid KV key ([-/_=.a-zA-Z0-9]+, no leading or trailing dot), got {task_id!r}"
        )
    return task_id


class NatsStatusStore:
    """Task records in the KV bucket `bucket`.

    Args:
        conn: the NATS connection.
        bucket: bucket name.
        ttl: seconds a record lives after its last write.
        replicas: bucket replicas (3 on an R3 cluster).
        storage: "file" or "memory".
        publisher: durable path for `put_nowait` (outbox while NATS is down).

    """

    def __init__(
        self,
        conn: NatsConnection,
        *,
        bucket: str = "hulk_status",
        ttl: float = 24 * 3600.0,
        replicas: int = 1,
        storage: str = "file",
        publisher: EventPublisher | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        self._conn = conn
        self.bucket = bucket
        self.ttl = ttl
        self.replicas = replicas
        self.storage = storage
        self.publisher = publisher
        self._kv: KeyValue | None = None
        self._prefix = f"$KV.{bucket}."
        self._creates: AckPipeline | None = None

    async def start(self) -> None:
        """Binds to the bucket, creating it when missing (idempotent)."""
        js = self._conn.js
        try:
            self._kv = await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            self._kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=self.bucket,
                    history=1,
                    ttl=self.ttl,
                    replicas=self.replicas,
                    storage=StorageType(self.storage),
                    description="hulk task status and results",
                )
            )

    @property
    def kv(self) -> KeyValue:
        """The bound bucket."""
        if self._kv is None:
            raise RuntimeError("NatsStatusStore.start() was not called")
        return self._kv

    async def put(self, task_id: str, record: Mapping[str, Any]) -> int:
        """Stores `record` (JSON-serialisable) as the task's current record; returns its revision."""
        return await self.kv.put(_check_key(task_id), orjson.dumps(dict(record)))

    async def put_nowait(self, task_id: str, record: Mapping[str, Any]) -> None:
        """Durable pipelined `put` for the hot path: `put_many_nowait` of one record (see there)."""
        await self.put_many_nowait([(task_id, record)])

    async def create_nowait(self, task_id: str, record: Mapping[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Sends a create of the task's first record (stored only if the key has none); returns its ack.

        Pipelined: the caller can send other messages before it awaits the future. The future fails
        with `PublishError` and `err_code` `WRONG_LAST_SEQUENCE` when the key already has a record.

        Raises:
            ValueError: `task_id` is not a valid key.
            nats.errors.Error: not connected.
        """
        if self._creates is None:
            self._creates = AckPipeline(self._conn)
        subject, data = self._prefix + _check_key(task_id), orjson.dumps(dict(record))
        return await self._creates.publish(subject, data, {"Nats-Expected-Last-Subject-Sequence": "0"})

    async def close(self) -> None:
        """Stops the create pipeline (pending creates fail with TimeoutError)."""
        if self._creates is not None:
            await self._creates.close()
            self._creates = None

    async def put_many_nowait(self, records: Sequence[tuple[str, Mapping[str, Any]]]) -> asyncio.Future[None] | None:
        """`put_nowait` for many tasks at once, with one acknowledgement for the lot.

        Goes through the event publisher's `publish_group` when one is set (outbox while NATS is
        down) and returns its future, resolved once the records are stored or in the outbox; else
        the records are sent as one pipelined group whose acknowledgement nobody awaits (None).
        """
        dumps, prefix = orjson.dumps, self._prefix
        messages = [
            (prefix + _check_key(task_id), dumps(rec if type(rec) is dict else dict(rec))) for task_id, rec in records
        ]
        return await self._put_group(messages)

    async def put_tasks_nowait(self, tasks: Sequence[Any]) -> asyncio.Future[None] | None:
        """`put_many_nowait` of the tasks' current records (`task.to_dict()`).

        The records of engine tasks (`hulk.engine.task.Task`) are written natively from their
        fields; any other object with an `id` and a `to_dict()` goes through orjson.

        Raises:
            ValueError: a task id is not a valid key.
        """
        try:
            messages = RECORD_ENCODER.messages(self._prefix, tasks)
        except TypeError:
            # Not engine tasks (or a value JSON cannot hold, which raises again there).
            return await self.put_many_nowait([(task.id, task.to_dict()) for task in tasks])
        return await self._put_group(messages)

    async def _put_group(self, messages: list[tuple[str, bytes]]) -> asyncio.Future[None] | None:
        if self.publisher is not None:
            return await self.publisher.publish_group(messages)
        nc = self._conn.nc
        for subject, data in messages:
            await nc.publish(subject, data)
        return None

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The task's record, or None when unknown or expired."""
        try:
            entry = await self.kv.get(_check_key(task_id))
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        value: dict[str, Any] = orjson.loads(entry.value)
        return value

    async def delete(self, task_id: str) -> None:
        """Forgets a task's record."""
        await self.kv.delete(_check_key(task_id))

    async def wait(self, task_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Waits for the task's record to reach a terminal status; returns that record.

        Raises:
            TimeoutError: not terminal within `timeout` seconds.

        """
        key = _check_key(task_id)
        updates: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            updates.put_nowait(msg.data)

        sub = await self._conn.nc.subscribe(self._prefix + key, cb=on_msg)
        try:

            async def _wait() -> dict[str, Any]:
                current = await self.get(key)
                if current is not None and current.get("status") in TERMINAL_STATUSES:
                    return current
                while True:
                    try:
                        data = await asyncio.wait_for(updates.get(), 1.0)
                    except TimeoutError:
                        # A write published just before the subscription may be stored only after
                        # the first read: read again now and then.
                        current = await self.get(key)
                        if current is not None and current.get("status") in TERMINAL_STATUSES:
                            return current
                        continue
                    if not data:
                        continue
                    record: dict[str, Any] = orjson.loads(data)
                    if record.get("status") in TERMINAL_STATUSES:
                        return record

            return await asyncio.wait_for(_wait(), timeout)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
