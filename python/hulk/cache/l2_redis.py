"""L2: Redis through redis-py's asyncio client, guarded by the native `CircuitBreaker`.

Every operation is one round trip (GET, MGET, or a non-transactional pipeline for the multi-key
writes and their invalidation message). For a plain `redis://` URL, the reads and writes of the
read path (MGET, GET, and the write pipelines) go through one lean pipelined connection
(`hulk.cache.resp`), which costs a quarter of redis-py's per-call overhead; redis-py serves the rest
(PING, SCAN, UNLINK, PUBLISH, pub/sub) and every other URL. Calls are bounded by short socket timeouts; the breaker
counts failures and opens after a few, and while it is not closed the cache's calls skip Redis at
once (no socket is touched), so a dead Redis costs callers nothing after the first failures.

Recovery needs no caller: a background probe waits for the breaker to half-open, sends PING as the
half-open probe, and once the breaker closes it reports the recovery (the cache then re-syncs what it
wrote while Redis was away and resubscribes to invalidations). Callers never act as probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import MaxConnectionsError, RedisError, ResponseError

from hulk._native import CircuitBreaker
from hulk.cache._tasks import stop_task
from hulk.cache.metrics import CacheMetrics
from hulk.cache.resp import FastConnection, supports

log = structlog.get_logger("hulk.cache.l2")


class Unavailable:
    """The result of an L2 call that did not reach Redis (breaker open, timeout, connection error)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNAVAILABLE"

    def __bool__(self) -> bool:
        return False


UNAVAILABLE: Final = Unavailable()

# For each key: SET unless it holds a live value (absent keys and tombstones, records starting with
# "t", are replaced). ARGV holds (record, ttl in ms or "") per key. One script call per batch, not one
# per key: Redis runs one Lua invocation for the whole batch. Sent as EVALSHA (EVAL on NOSCRIPT), so
# the script's text and its digest are not sent or computed on every batch.
_FILL_SCRIPT = """
local written = 0
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if not current or string.byte(current, 1) == 116 then
    local ttl = ARGV[2 * i]
    if ttl == '' then
      redis.call('SET', key, ARGV[2 * i - 1])
    else
      redis.call('SET', key, ARGV[2 * i - 1], 'PX', ttl)
    end
    written = written + 1
  end
end
return written
"""
_FILL_SHA = hashlib.sha1(_FILL_SCRIPT.encode(), usedforsecurity=False).hexdigest()  # Redis names scripts by SHA-1

# A failure that makes Redis unavailable for the cache: redis-py's errors and socket errors.
_FAILURES = (RedisError, OSError)

_GLOB_SPECIAL = re.compile(r"[*?\[\]\\]")


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***` (for logs and health)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def glob_escape(text: str) -> str:
    """`text` with the characters special to Redis glob patterns (`*`, `?`, `[`, `]`, backslash) escaped."""
    return _GLOB_SPECIAL.sub(r"\\\g<0>", text)


async def _fast_pipeline(fast: FastConnection, commands: list[tuple[str | bytes | int, ...]]) -> list[Any]:
    try:
        return await fast.pipeline(commands)
    except ResponseError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
    # Redis does not know the script yet (first use, restart, SCRIPT FLUSH): EVAL loads it. The other
    # commands of such a pipeline are a PUBLISH at most: sending it again is harmless.
    retried = [("EVAL", _FILL_SCRIPT, *cmd[2:]) if cmd[0] == "EVALSHA" else cmd for cmd in commands]
    return await fast.pipeline(retried)


class RedisLevel:
    """The L2 level: one Redis connection pool behind a circuit breaker.

    Args:
        url: `redis://[[user]:password@]host:port/db` (or `rediss://`, `unix://`).
        breaker: the breaker that guards every call.
        metrics: where errors and skipped calls are counted.
        socket_timeout: seconds a call may wait on the socket.
        connect_timeout: seconds a connection attempt may take.
        max_connections: size of the pool (one connection is the invalidation subscription's); calls
            beyond it wait for a free connection, each call being bounded by the socket timeouts.
        on_recover: awaited once each time Redis comes back.
    """

    def __init__(
        self,
        url: str,
        *,
        breaker: CircuitBreaker,
        metrics: CacheMetrics,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        max_connections: int = 64,
        on_recover: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.breaker = breaker
        self.metrics = metrics
        self.socket_timeout = socket_timeout
        self._on_recover = on_recover
        # The plain pool: the blocking one costs a condition variable and a timer on every call.
        self._pool: ConnectionPool = ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
        )
        self.client: Redis = Redis(connection_pool=self._pool)
        self._fast: FastConnection | None = (
            FastConnection(url, timeout=socket_timeout, connect_timeout=connect_timeout) if supports(url) else None
        )
        self._down = False
        self._wake = asyncio.Event()
        self._probe_task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.outages = 0
        self.probes = 0
        self._slots = asyncio.Semaphore(max(1, max_connections - 1))
        self.batched_reads = 0
        self._reading = False
        self._next_batch: list[tuple[Sequence[str], asyncio.Future[Any]]] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        """True while the breaker lets callers through (Redis is believed reachable)."""
        return not self._down and self.breaker.state == "closed"

    async def start(self) -> bool:
        """Checks Redis with one PING and starts the recovery probe.

        Returns:
            True when Redis answered; False when it did not (the breaker is forced open and the probe
            keeps trying in the background).
        """
        self._probe_task = asyncio.create_task(self._probe_loop(), name="hulk-cache-l2-probe")
        started = time.perf_counter()
        try:
            await self.client.ping()
        except _FAILURES as exc:
            self.breaker.force_open()
            self._mark_down(exc)
            return False
        self.breaker.record_success(time.perf_counter() - started)
        return True

    async def close(self) -> None:
        """Stops the probe and closes every connection."""
        task, self._probe_task = self._probe_task, None
        await stop_task(task)
        for batch_task in list(self._batch_tasks):
            await stop_task(batch_task)
        if self._fast is not None:
            self._fast.close()
        with contextlib.suppress(*_FAILURES):
            await self.client.aclose()
        with contextlib.suppress(*_FAILURES):
            await self._pool.disconnect()

    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._down or self.breaker.state == "closed":
            return
        self._down = True
        self.outages += 1
        log.warning(
            "cache.l2.unavailable",
            url=redact_url(self.url),
            error=self.last_error,
            mode="running on L1 + L3 until Redis answers again",
        )
        self._wake.set()

    async def _probe_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.breaker.state != "closed":
                if self.breaker.state == "open" or not self.breaker.allow():
                    # Waiting out the breaker's own open period: a timer, not a synchronisation.
                    await asyncio.sleep(max(self.breaker.retry_after(), 0.01))
                    continue
                started = time.perf_counter()
                self.probes += 1
                try:
                    await self.client.ping()
                except _FAILURES as exc:
                    self.breaker.record_failure(time.perf_counter() - started)
                    self.last_error = f"{type(exc).__name__}: {exc}"
                except asyncio.CancelledError:
                    self.breaker.release()
                    raise
                else:
                    self.breaker.record_success(time.perf_counter() - started)
            if self._down:
                self._down = False
                log.info("cache.l2.recovered", url=redact_url(self.url))
                if self._on_recover is not None:
                    try:
                        await self._on_recover()
                    except _FAILURES as exc:
                        self._failed(exc, 0.0)

    def _failed(self, exc: BaseException, duration: float) -> None:
        self.metrics.l2_error.inc()
        self.breaker.record_failure(duration)
        if self.breaker.state != "closed":
            self._mark_down(exc)
        else:
            self.last_error = f"{type(exc).__name__}: {exc}"

    async def _call(self, op: Callable[[], Awaitable[Any]], *, pooled: bool = True) -> Any:
        if self._down or self.breaker.state != "closed" or not self.breaker.allow():
            self.metrics.l2_skipped.inc()
            return UNAVAILABLE
        started = time.perf_counter()
        try:
            if pooled:
                async with self._slots:
                    result = await op()
            else:  # the lean connection is pipelined: no pool slot to wait for
                result = await op()
        except MaxConnectionsError:
            self.breaker.release()  # our pool is exhausted (by another user of it): not Redis's fault
            self.metrics.l2_skipped.inc()
            return UNAVAILABLE
        except _FAILURES as exc:
            self._failed(exc, time.perf_counter() - started)
            return UNAVAILABLE
        except BaseException:
            self.breaker.release()
            raise
        elapsed = time.perf_counter() - started
        self.breaker.record_success(elapsed)
        self.metrics.latency["l2"].observe(elapsed)
        return result

    async def get(self, key: str) -> bytes | Unavailable | None:
        """The stored record of `key`, None when absent, or UNAVAILABLE."""
        fast = self._fast
        if fast is not None:
            found: bytes | Unavailable | None = await self._call(lambda: fast.execute("GET", key), pooled=False)
            return found
        result: bytes | Unavailable | None = await self._call(lambda: self.client.get(key))
        return result

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | Unavailable:
        """The records of `keys` in order (None for absent ones), or UNAVAILABLE.

        Reads are batched without delay: when no MGET is in flight the call sends its own at once;
        calls made while one is in flight join the next MGET, sent as soon as that one returns. An
        idle cache pays nothing for it, and a busy one sends one MGET per round trip instead of one
        per caller.
        """
        if not self._reading:
            self._reading = True
            try:
                result: list[bytes | None] | Unavailable = await self._mget(keys)
            finally:
                self._reading = False
                self._send_next_batch()
            return result
        fut: asyncio.Future[list[bytes | None] | Unavailable] = asyncio.get_running_loop().create_future()
        self._next_batch.append((keys, fut))
        self.batched_reads += 1
        return await fut

    async def _mget(self, keys: Sequence[str]) -> list[bytes | None] | Unavailable:
        fast = self._fast
        if fast is not None:
            found: list[bytes | None] | Unavailable = await self._call(
                lambda: fast.execute("MGET", *keys), pooled=False
            )
            return found
        result: list[bytes | None] | Unavailable = await self._call(lambda: self.client.mget(keys))
        return result

    def _send_next_batch(self) -> None:
        if self._next_batch and not self._reading:
            batch, self._next_batch = self._next_batch, []
            self._reading = True
            task = asyncio.get_running_loop().create_task(self._read_batch(batch), name="hulk-cache-l2-mget")
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    async def _read_batch(self, batch: list[tuple[Sequence[str], asyncio.Future[Any]]]) -> None:
        unique = list(dict.fromkeys(key for wanted, _ in batch for key in wanted))
        result: list[bytes | None] | Unavailable = UNAVAILABLE
        try:
            result = await self._mget(unique)
        finally:
            self._reading = False
            found = None if isinstance(result, Unavailable) else dict(zip(unique, result, strict=True))
            for wanted, fut in batch:
                if not fut.done():
                    fut.set_result(UNAVAILABLE if found is None else [found[key] for key in wanted])
            self._send_next_batch()

    async def write(
        self,
        entries: Sequence[tuple[str, bytes, int | None]],
        *,
        fill: bool = False,
        channel: str | None = None,
        message: bytes | None = None,
    ) -> bool:
        """Stores records, and publishes `message` on `channel`, in one round trip.

        Args:
            entries: (key, record, ttl in milliseconds or None for no expiry).
            fill: store a record only where the key is absent or holds a tombstone (computed values
                and back-fills, which must never replace a value another caller set meanwhile).
            channel: the invalidation channel to publish on, if any.
            message: what to publish.

        Returns:
            True when Redis took every command; False when it was unavailable.
        """
        fill_args: list[str | bytes | int] = []
        if fill and entries:
            fill_args = [len(entries), *(key for key, _, _ in entries)]
            for _, record, ttl_ms in entries:
                fill_args += (record, "" if ttl_ms is None else ttl_ms)
        fast = self._fast
        if fast is not None:
            commands: list[tuple[str | bytes | int, ...]] = []
            if fill_args:
                commands.append(("EVALSHA", _FILL_SHA, *fill_args))
            elif not fill:
                for key, record, ttl_ms in entries:
                    commands.append(("SET", key, record) if ttl_ms is None else ("SET", key, record, "PX", ttl_ms))
            if channel is not None and message is not None:
                commands.append(("PUBLISH", channel, message))
            if not commands:
                return True
            return await self._call(lambda: _fast_pipeline(fast, commands), pooled=False) is not UNAVAILABLE

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                if fill_args:
                    pipe.eval(_FILL_SCRIPT, len(entries), *fill_args[1:])
                elif not fill:
                    for key, record, ttl_ms in entries:
                        pipe.set(key, record, px=ttl_ms)
                if channel is not None and message is not None:
                    pipe.publish(channel, message)
                replies: list[Any] = await pipe.execute()
                return replies

        return await self._call(run) is not UNAVAILABLE

    async def unlink_matching(self, pattern: str, *, batch: int = 1000) -> tuple[int, bool]:
        """Removes the keys that match the glob `pattern`: SCAN with MATCH, then UNLINK, one batch at a time.

        Never FLUSHDB: other data may share the database. Each SCAN and each UNLINK is one guarded
        call, so a Redis that stops answering midway ends the walk (what was removed stays removed).

        Args:
            pattern: a glob for SCAN's MATCH (escape the literal part with `glob_escape`).
            batch: the COUNT hint of each SCAN.

        Returns:
            (keys removed, True when the whole key space was walked).
        """
        removed = 0
        cursor: int = 0
        while True:
            answer = await self._call(functools.partial(self.client.scan, cursor, match=pattern, count=batch))
            if isinstance(answer, Unavailable):
                return removed, False
            cursor, keys = answer
            if keys:
                unlinked = await self._call(functools.partial(self.client.unlink, *keys))
                if isinstance(unlinked, Unavailable):
                    return removed, False
                removed += int(unlinked)
            if not cursor:
                return removed, True

    async def log_flush(self, key: str, field: str, at: float) -> bool:
        """Records in the hash `key` that `field` (a namespace, or "*") was flushed at `at`; False if unavailable."""
        fast = self._fast
        if fast is not None:
            return await self._call(lambda: fast.execute("HSET", key, field, repr(at)), pooled=False) is not UNAVAILABLE
        return await self._call(lambda: self.client.hset(key, field, repr(at))) is not UNAVAILABLE

    async def read_flush_log(self, key: str) -> dict[str, float] | Unavailable:
        """The flushes recorded in the hash `key` (field: time), or UNAVAILABLE."""
        fast = self._fast
        if fast is not None:
            flat = await self._call(lambda: fast.execute("HGETALL", key), pooled=False)
            answer = flat if isinstance(flat, Unavailable) else dict(zip(flat[::2], flat[1::2], strict=True))
        else:
            answer = await self._call(lambda: self.client.hgetall(key))
        if isinstance(answer, Unavailable):
            return answer
        found: dict[str, float] = {}
        for field, value in answer.items():
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                found[field.decode()] = float(value)
        return found

    async def publish(self, channel: str, message: bytes) -> bool:
        """Publishes `message` on `channel`; False when Redis was unavailable."""
        return await self._call(lambda: self.client.publish(channel, message)) is not UNAVAILABLE
