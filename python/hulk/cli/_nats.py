"""What `thor` reads from NATS directly: JetStream stream statistics and instance heartbeats.

The HTTP API speaks for one instance; NATS sees them all. This module stays small: one short-lived
connection per command, no reconnects, and `NatsUnavailable` (with the URL and the reason) when the
server cannot be reached, so the caller can degrade with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from hulk.errors import HulkError
from hulk.messaging.streams import STREAM_EVENTS, SUBJECT_HEALTH

__all__ = [
    "DEFAULT_NATS_URL",
    "HEARTBEAT_STREAM",
    "HEARTBEAT_SUBJECT",
    "NatsTarget",
    "NatsUnavailable",
    "instances",
    "stream_report",
]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
HEARTBEAT_STREAM = STREAM_EVENTS
HEARTBEAT_SUBJECT = SUBJECT_HEALTH
_MISSED_BEATS = 3.0
_MAX_HEARTBEATS = 10_000


class NatsUnavailable(HulkError):
    """NATS cannot be reached (or has no JetStream).

    Attributes:
        url: the server URL(s) tried.
        reason: what went wrong.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach NATS at {url}: {reason}")


@dataclass(frozen=True, kw_only=True)
class NatsTarget:
    """How to reach NATS: URLs and one optional authentication method.

    Args:
        urls: server URLs.
        user: user name (with `password`).
        password: password.
        token: authorization token.
        creds_file: a `.creds` file.
        timeout: seconds for the connection and each request.
    """

    urls: tuple[str, ...] = (DEFAULT_NATS_URL,)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    timeout: float = 3.0

    @property
    def label(self) -> str:
        """The URLs, comma-separated, with any password in them masked."""
        return ",".join(_mask(url) for url in self.urls)


def _mask(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@contextlib.asynccontextmanager
async def _connect(target: NatsTarget) -> AsyncIterator[Client]:
    errors: list[BaseException] = []

    async def remember(exc: Exception) -> None:
        # nats-py reports each failed attempt here and then raises a generic "no servers": keep the cause.
        errors.append(exc)

    options: dict[str, Any] = {
        "servers": list(target.urls),
        "connect_timeout": target.timeout,
        # nats-py retries a server forever when max_reconnect_attempts is 0; 1 means two tries each.
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "error_cb": remember,
        "name": "thor",
    }
    if target.user:
        options["user"], options["password"] = target.user, target.password or ""
    if target.token:
        options["token"] = target.token
    if target.creds_file:
        options["user_credentials"] = target.creds_file
    nc = Client()
    try:
        await asyncio.wait_for(nc.connect(**options), timeout=target.timeout * 3)
    except Exception as exc:  # nats-py raises several unrelated types for "no server"
        # A refused handshake (bad credentials) leaves the socket open: close it.
        with contextlib.suppress(Exception):
            await nc.close()
        # A refused login may be followed by a reset on the retry: the refusal is the reason to report.
        refusals = [e for e in errors if "authorization" in str(e).lower()]
        cause = refusals[0] if refusals else errors[-1] if errors else exc
        reason = str(cause) or type(cause).__name__
        raise NatsUnavailable(target.label, reason) from None
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def stream_report(target: NatsTarget, *, prefix: str = "HULK_") -> list[dict[str, Any]]:
    """Statistics of every JetStream stream whose name starts with `prefix` ("" for all).

    Returns:
        One dict per stream: `name`, `subjects`, `messages`, `bytes`, `consumers` (count),
        `pending` and `redelivered` (summed over its consumers), `first_seq`, `last_seq`, and
        `consumer_details` (per consumer: `name`, `pending`, `ack_pending`, `redelivered`, `waiting`).

    Raises:
        NatsUnavailable: no connection, or the server has no JetStream.
    """
    async with _connect(target) as nc:
        jsm = nc.jsm()
        try:
            streams = await jsm.streams_info()
        except Exception as exc:
            raise NatsUnavailable(target.label, f"JetStream not available: {exc or type(exc).__name__}") from None
        report: list[dict[str, Any]] = []
        for info in sorted(streams, key=lambda s: s.config.name or ""):
            name = info.config.name or ""
            if not name.startswith(prefix):
                continue
            consumers = []
            for c in await jsm.consumers_info(name):
                consumers.append(
                    {
                        "name": c.name,
                        "pending": c.num_pending or 0,
                        "ack_pending": c.num_ack_pending or 0,
                        "redelivered": c.num_redelivered or 0,
                        "waiting": c.num_waiting or 0,
                    }
                )
            report.append(
                {
                    "name": name,
                    "subjects": list(info.config.subjects or []),
                    "messages": info.state.messages,
                    "bytes": info.state.bytes,
                    "consumers": info.state.consumer_count,
                    "pending": sum(c["pending"] for c in consumers),
                    "redelivered": sum(c["redelivered"] for c in consumers),
                    "first_seq": info.state.first_seq,
                    "last_seq": info.state.last_seq,
                    "consumer_details": consumers,
                }
            )
        return report


def _instance_name(body: dict[str, Any]) -> str | None:
    for key in ("instance", "instance_id", "id", "name"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


async def instances(target: NatsTarget, *, window: float = 60.0) -> list[dict[str, Any]]:
    """The instances that published a heartbeat within the last `window` seconds, newest first.

    Heartbeats (`hulk.messaging.heartbeat`) are JSON objects on `hulk.runtime.health` naming their
    instance and their `interval`; each instance is reported with its latest heartbeat's fields plus
    `seen_ago` (seconds) and `alive` (False after three silent intervals, as the monitor judges).

    Raises:
        NatsUnavailable: no connection, or the server has no JetStream.
    """
    now = dt.datetime.now(dt.UTC)
    async with _connect(target) as nc:
        js = nc.jetstream(timeout=target.timeout)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=now - dt.timedelta(seconds=window),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=max(5.0, target.timeout * 2),
            max_ack_pending=-1,
        )
        try:
            sub = await js.pull_subscribe(HEARTBEAT_SUBJECT, stream=HEARTBEAT_STREAM, config=config)
        except NotFoundError:
            return []
        except Exception as exc:
            raise NatsUnavailable(target.label, f"JetStream not available: {exc or type(exc).__name__}") from None
        latest: dict[str, tuple[dt.datetime, dict[str, Any]]] = {}
        try:
            remaining = min((await sub.consumer_info()).num_pending or 0, _MAX_HEARTBEATS)
            while remaining > 0:
                try:
                    batch = await sub.fetch(min(remaining, 256), timeout=target.timeout)
                except nats.errors.TimeoutError:
                    break
                remaining -= len(batch)
                for msg in batch:
                    try:
                        body = json.loads(msg.data)
                    except ValueError:
                        continue
                    name = _instance_name(body) if isinstance(body, dict) else None
                    if name is None:
                        continue
                    stamp = msg.metadata.timestamp or now
                    if stamp.tzinfo is None:
                        stamp = stamp.replace(tzinfo=dt.UTC)
                    if name not in latest or latest[name][0] <= stamp:
                        latest[name] = (stamp, body)
        finally:
            # Ephemeral consumers linger until their inactive threshold: delete ours now.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if config.name:
                with contextlib.suppress(Exception):
                    await nc.jsm().delete_consumer(HEARTBEAT_STREAM, config.name)
    now = dt.datetime.now(dt.UTC)
    result = []
    for name, (stamp, body) in latest.items():
        seen_ago = max(0.0, (now - stamp).total_seconds())
        interval = body.get("interval")
        interval = float(interval) if isinstance(interval, int | float) and interval > 0 else 2.0
        entry = {"instance": name, "alive": seen_ago <= _MISSED_BEATS * interval, "seen_ago": round(seen_ago, 1)}
        entry.update({k: v for k, v in body.items() if k not in entry})
        result.append(entry)
    result.sort(key=lambda e: (e["seen_ago"], e["instance"]))
    return result
