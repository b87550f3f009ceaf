"""Instance heartbeats on `hulk.runtime.health`, and a monitor that reports instances gone.

Each instance publishes, every `interval`, its id, version, queue depth, workers and breaker states
(whatever its `stats` callable returns). A beat is a plain publish (the events stream keeps it): a
beat that cannot be sent is simply skipped, never queued. The monitor marks an instance gone when
it has not beaten for `missed` intervals, once, and tells its callback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hulk.messaging.connection import NatsConnection, cancel_and_wait
from hulk.messaging.streams import SUBJECT_HEALTH

__all__ = ["HeartbeatMonitor", "HeartbeatPublisher", "InstanceState"]

log = logging.getLogger("hulk.messaging")


class HeartbeatPublisher:
    """Publishes this instance's heartbeat every `interval` seconds.

    Args:
        conn: the NATS connection.
        instance_id: this instance's id.
        version: hulk's version.
        interval: seconds between beats.
        stats: returns the beat's variable part (queue_depth, workers, breakers...).

    """

    def __init__(
        self,
        conn: NatsConnection,
        *,
        instance_id: str,
        version: str,
        interval: float = 2.0,
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._conn = conn
        self.instance_id = instance_id
        self.version = version
        self.interval = interval
        self._stats = stats or dict
        self._task: asyncio.Task[None] | None = None
        self.beats = 0

    def beat_body(self) -> bytes:
        """One heartbeat's JSON body."""
        body = {"instance": self.instance_id, "version": self.version, "ts": time.time(), "interval": self.interval}
        body.update(self._stats())
        return orjson.dumps(body)

    async def beat(self) -> None:
        """Publishes one heartbeat now (skipped while disconnected)."""
        if not self._conn.connected:
            return
        await self._conn.nc.publish(SUBJECT_HEALTH, self.beat_body())
        self.beats += 1

    def start(self) -> None:
        """Starts beating."""
        self._task = asyncio.create_task(self._loop(), name="hulk-heartbeat")

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:
                log.debug("heartbeat not sent: %r", exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stops beating."""
        await cancel_and_wait(self._task)
        self._task = None


@dataclass
class InstanceState:
    """What the monitor knows of one instance."""

    instance: str
    last_seen: float
    beat: dict[str, Any]
    gone: bool = False


class HeartbeatMonitor:
    """Follows heartbeats; reports an instance gone after `missed` intervals of silence.

    Args:
        conn: the NATS connection.
        missed: silent intervals (of the instance's own announced interval) before it is gone.
        on_gone: called with the instance id once when it is declared gone.

    """

    def __init__(
        self, conn: NatsConnection, *, missed: float = 3.0, on_gone: Callable[[str], None] | None = None
    ) -> None:
        self._conn = conn
        self.missed = missed
        self._on_gone = on_gone
        self.instances: dict[str, InstanceState] = {}
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribes to heartbeats and starts the sweep."""
        self._sub = await self._conn.nc.subscribe(SUBJECT_HEALTH, cb=self._on_beat)
        self._task = asyncio.create_task(self._sweep_loop(), name="hulk-heartbeat-monitor")

    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat: dict[str, Any] = orjson.loads(msg.data)
            instance = str(beat["instance"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        state = self.instances.get(instance)
        if state is None or state.gone:
            log.info("instance %s is up", instance)
        self.instances[instance] = InstanceState(instance, time.monotonic(), beat)

    def alive(self) -> list[str]:
        """Ids of the instances not gone."""
        return sorted(i for i, s in self.instances.items() if not s.gone)

    def sweep(self, now: float | None = None) -> list[str]:
        """Marks silent instances gone; returns the ones newly gone."""
        now = time.monotonic() if now is None else now
        gone = []
        for state in self.instances.values():
            interval = float(state.beat.get("interval", 2.0))
            if not state.gone and now - state.last_seen > self.missed * interval:
                state.gone = True
                gone.append(state.instance)
                log.warning("instance %s is gone (no heartbeat for %.1fs)", state.instance, now - state.last_seen)
                if self._on_gone is not None:
                    self._on_gone(state.instance)
        return gone

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.sweep()

    async def stop(self) -> None:
        """Stops following."""
        await cancel_and_wait(self._task)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                log.debug("heartbeat unsubscribe: %r", exc)
