"""Pipelined JetStream publishes: many in flight, acknowledgements matched by reply token.

nats-py's `publish_async` loses stream errors (its reply handler raises instead of failing the
future, which then never resolves) and pays an `asyncio.wait_for` per publish. This pipeline
subscribes one wildcard inbox, gives each publish a short reply token, parses acknowledgements with
orjson and fails a future with `PublishError` (carrying the server's `err_code`) or, after
`timeout`, with `TimeoutError` (one sweep for all, not a timer per publish). The inbox
subscription survives reconnects (nats-py restores subscriptions).

`publish_group` coalesces acknowledgements: the messages of a group, all bound to one stream, go
out back to back and only the last asks for an acknowledgement. The server stores the messages of
one connection to one stream in the order they arrive, so the last one stored means the group is
stored; if that acknowledgement fails or never comes, the caller treats the whole group as not
stored (re-sending a KV record or a deduplicated event is harmless). The one case this cannot see
is the stream refusing an earlier message while storing the last (a byte limit reached mid-group),
which is why groups are used only for the status bucket, which has no such limit.

Room for in-flight messages is a counter and one event with hysteresis (waiters are woken when a
quarter of the window is free), not an `asyncio.Semaphore`: CPython 3.11's `Semaphore.acquire`
scans every waiter, which turns a saturated window quadratic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hulk.errors import HulkError
from hulk.messaging.connection import NatsConnection, cancel_and_wait
from hulk.messaging.frames import frames_of, group_frames_of, send_frames
from hulk.messaging.frames import supported as frames_supported

__all__ = ["AckPipeline", "PublishError"]


class PublishError(HulkError):
    """JetStream refused a publish.

    Attributes:
        code: HTTP-like status code.
        err_code: JetStream error code (10077: message limit, 10047: byte limit...).
        description: the server's text.
    """

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream refused the publish: {description} (err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class AckPipeline:
    """Publishes with acknowledgements awaited asynchronously, at most `max_pending` at once.

    Args:
        conn: the NATS connection.
        timeout: seconds before an unacknowledged publish fails with TimeoutError.
        max_pending: publishes in flight at most (`publish` waits for room).
    """

    def __init__(self, conn: NatsConnection, *, timeout: float = 5.0, max_pending: int = 4096) -> None:
        self._conn = conn
        self.timeout = timeout
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._in_flight = 0  # messages sent and not yet settled (a group counts all its messages)
        self._room = asyncio.Event()
        self._room.set()
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], float, int]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._prefix = ""
        self._n = 0
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._frames = False

    @property
    def pending(self) -> int:
        """Publishes awaiting their acknowledgement."""
        return len(self._pending)

    async def start(self) -> None:
        """Subscribes the reply inbox and starts the timeout sweep (idempotent)."""
        if self._sub is not None:
            return
        nc = self._conn.nc
        self._frames = frames_supported(nc)
        self._prefix = nc.new_inbox() + "."
        self._sub = await nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="hulk-publish-sweep")

    async def _reserve(self, n: int) -> None:
        # A group larger than the whole window still goes out, alone.
        n = min(n, self.max_pending)
        while self._in_flight + n > self.max_pending:
            self._room.clear()
            await self._room.wait()

    def _track(self, n: int) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        self._n += 1
        token = format(self._n, "x")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = (fut, time.monotonic() + self.timeout, n)
        self._in_flight += n
        self._idle.clear()
        return token, fut

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Sends one message; returns a future of the stream's acknowledgement (`{"stream", "seq", ...}`).

        Raises:
            nats.errors.Error: the message could not even be sent (connection closed...).
        """
        if self._sub is None:
            await self.start()
        await self._reserve(1)
        token, fut = self._track(1)
        try:
            await self._send([(subject, payload, self._prefix + token, headers)])
        except BaseException:
            self._finish(token)
            raise
        return fut

    async def publish_many(
        self, messages: Sequence[tuple[str, bytes, dict[str, str] | None]]
    ) -> list[asyncio.Future[dict[str, Any]]]:
        """Sends many `(subject, payload, headers)` messages at once, each acknowledged on its own.

        Like `publish` for each message (the futures are in order), but handed to the client in one
        go (see `_send`). Waits for room for all of them first.

        Raises:
            nats.errors.Error: the messages could not be sent (connection closed...).
        """
        if not messages:
            return []
        if self._sub is None:
            await self.start()
        await self._reserve(len(messages))
        tracked = [self._track(1) for _ in messages]
        prefix = self._prefix
        try:
            await self._send(
                [
                    (subject, payload, prefix + token, headers)
                    for (subject, payload, headers), (token, _fut) in zip(messages, tracked, strict=True)
                ]
            )
        except BaseException:
            for token, _fut in tracked:
                self._finish(token)
            raise
        return [fut for _token, fut in tracked]

    async def publish_group(
        self, messages: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Sends `(subject, payload)` messages bound to one stream, all with `headers`; one acknowledgement for all.

        Returns the future of the last message's acknowledgement: resolved means every message of
        the group is stored (see the module docstring for the one exception).

        Raises:
            ValueError: `messages` is empty.
            nats.errors.Error: the group could not be sent (connection closed...).
        """
        if not messages:
            raise ValueError("publish_group needs at least one message")
        if self._sub is None:
            await self.start()
        await self._reserve(len(messages))
        token, fut = self._track(len(messages))
        reply = self._prefix + token
        try:
            nc = self._conn.nc
            if self._frames:
                data, payload_bytes = group_frames_of(nc, messages, headers, reply)
                await send_frames(nc, data, len(messages), payload_bytes)
            else:
                last = len(messages) - 1
                for index, (subject, payload) in enumerate(messages):
                    await nc.publish(subject, payload, reply=reply if index == last else "", headers=headers)
        except BaseException:
            self._finish(token)
            raise
        return fut

    async def _send(self, outgoing: Sequence[tuple[str, bytes, str, dict[str, str] | None]]) -> None:
        """Hands `(subject, payload, reply, headers)` messages to the client, in order.

        As protocol frames in one append when the client allows (see `hulk.messaging.frames`),
        else one `publish` each. Nothing is sent if a payload is too large or a subject invalid.
        """
        nc = self._conn.nc
        if not self._frames:
            for subject, payload, reply, headers in outgoing:
                await nc.publish(subject, payload, reply=reply, headers=headers)
            return
        data, payload_bytes = frames_of(nc, outgoing)
        await send_frames(nc, data, len(outgoing), payload_bytes)

    def _finish(self, token: str) -> asyncio.Future[dict[str, Any]] | None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return None
        self._in_flight -= entry[2]
        if not self._room.is_set() and self._in_flight <= self.max_pending - max(1, self.max_pending // 4):
            self._room.set()
        if not self._pending:
            self._in_flight = 0
            self._room.set()
            self._idle.set()
        return entry[0]

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._finish(msg.subject[len(self._prefix) :])
        if fut is None or fut.done():
            return
        hdrs = msg.headers
        if hdrs and hdrs.get("Status") == "503":
            fut.set_exception(PublishError(503, 0, "no stream for this subject"))
            return
        try:
            resp = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            fut.set_exception(PublishError(500, 0, f"bad acknowledgement {msg.data[:100]!r}"))
            return
        err = resp.get("error")
        if err:
            fut.set_exception(
                PublishError(int(err.get("code", 500)), int(err.get("err_code", 0)), str(err.get("description", "")))
            )
            return
        fut.set_result(resp)

    def sweep(self, now: float | None = None) -> int:
        """Fails the publishes whose acknowledgement is overdue; returns how many."""
        now = time.monotonic() if now is None else now
        overdue = [token for token, (_, deadline, _n) in self._pending.items() if deadline <= now]
        for token in overdue:
            fut = self._finish(token)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError(f"no acknowledgement within {self.timeout}s"))
        return len(overdue)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.timeout / 4))
            self.sweep()

    async def wait_idle(self) -> None:
        """Waits until no publish is in flight."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stops the sweep and the inbox; pending publishes fail with TimeoutError."""
        await cancel_and_wait(self._sweeper)
        self.sweep(float("inf"))
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
