"""A lean Redis connection for the cache's hot commands: pipelined RESP2 over one asyncio protocol.

Why not redis-py for these: on a miss, the cache's read path is one MGET, and redis-py spends about
four times the network round trip around it (pool checkout, retry wrapper, two timers, the RESP3
parser, observability hooks): 150-180 us against 40 us on localhost. This connection writes the
packed command and resolves a future when the reply is parsed, nothing else. The protocol itself is
not hand-written: hiredis (Redis's own C reader, the parser redis-py uses when it is installed) packs
commands and parses replies; this module only keeps the pipeline of waiters and the timeout. It
only speaks plain TCP (`redis://`, with AUTH and SELECT); `RedisLevel` keeps redis-py for everything
else.

Commands may be pipelined: replies come back in order, so each waiter is a future in a FIFO. A
caller that gives up (cancelled) leaves its future in the FIFO and its reply is dropped when it
arrives. A reply that does not come within `timeout` seconds closes the connection and fails every
waiter with `TimeoutError`; one timer watches the oldest request, not one timer per call. A lost
connection fails every waiter with `ConnectionError`; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ResponseError


def supports(url: str) -> bool:
    """True when `url` is a plain `redis://host:port/db` URL (credentials allowed, no query options)."""
    parts = urlsplit(url)
    return parts.scheme == "redis" and not parts.query and parts.hostname is not None


def pack(args: Sequence[str | bytes | int]) -> bytes:
    """One command in RESP (hiredis packs it, as redis-py does when hiredis is installed)."""
    # hiredis's stub types the argument as a one-element tuple; any length is packed.
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return packed


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.timeout = timeout
        self.waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        # hiredis (Redis's own C protocol reader) parses; error replies come back as values.
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.lost: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP transport (the service's loop) does not
        # subclass asyncio.Transport, yet has its write and abort.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiters = self.waiters
        try:
            reader.feed(data)
            while waiters:
                reply = reader.gets()
                if reply is False:
                    return  # the rest of the reply is still on its way
                fut = waiters.popleft()[0]
                if not fut.done():
                    fut.set_result(reply)
        except hiredis.ProtocolError as exc:
            self._fail(ConnectionError(f"bad reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed by Redis"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc if isinstance(exc, OSError) else ConnectionError(str(exc))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiters:
            fut = self.waiters.popleft()[0]
            if not fut.done():
                fut.set_exception(self.lost)
                fut.exception()  # retrieved: the waiters of a pipeline after a failed one never look
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, replies: int) -> list[asyncio.Future[Any]]:
        if self.lost is not None or self.transport is None:
            raise ConnectionError(f"Redis connection lost: {self.lost}")
        now = self._loop.time()
        futures = [self._loop.create_future() for _ in range(replies)]
        self.waiters.extend((fut, now) for fut in futures)
        self.transport.write(data)
        if self._timer is None:
            self._timer = self._loop.call_at(self._loop.time() + self.timeout, self._check)
        return futures

    def _check(self) -> None:
        self._timer = None
        if not self.waiters:
            return
        age = self._loop.time() - self.waiters[0][1]
        if age >= self.timeout:
            self._fail(TimeoutError(f"no reply from Redis within {self.timeout}s"))
        else:
            self._timer = self._loop.call_at(self._loop.time() + self.timeout - age, self._check)


class FastConnection:
    """One pipelined connection to the Redis of `url` (see the module docstring).

    Args:
        url: `redis://[[user]:password@]host[:port][/db]` (see `supports`).
        timeout: seconds a reply may take before the connection is dropped.
        connect_timeout: seconds connecting (and AUTH, SELECT) may take.
    """

    def __init__(self, url: str, *, timeout: float, connect_timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        task = self._connecting
        try:
            # Shielded: a caller cancelled while connecting must not cancel the others' connection.
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(lambda: _Protocol(self.timeout), self.host, self.port)
            setup: list[list[str | bytes | int]] = []
            if self.password is not None:
                user = [] if self.username is None else [self.username]
                setup.append(["AUTH", *user, self.password])
            if self.db:
                setup.append(["SELECT", self.db])
            if setup:
                for fut in protocol.send(b"".join(pack(cmd) for cmd in setup), len(setup)):
                    reply = await fut
                    if isinstance(reply, ResponseError):
                        protocol._fail(ConnectionError(f"Redis refused the connection set-up: {reply}"))
                        raise reply
        self._protocol = protocol
        return protocol

    async def execute(self, *args: str | bytes | int) -> Any:
        """Sends one command and returns its reply.

        Raises:
            ResponseError: Redis answered with an error.
            OSError: the connection failed or timed out (`ConnectionError`, `TimeoutError`).
        """
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connected()
        reply = await protocol.send(pack(args), 1)[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[str | bytes | int]]) -> list[Any]:
        """Sends `commands` in one write and returns their replies, in order.

        Raises:
            ResponseError: Redis answered one of them with an error (after all replies are read).
            OSError: the connection failed or timed out.
        """
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connected()
        futures = protocol.send(b"".join(pack(cmd) for cmd in commands), len(commands))
        replies = [await fut for fut in futures]
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def close(self) -> None:
        """Drops the connection (waiters get `ConnectionError`)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol._fail(ConnectionError("connection closed"))
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
