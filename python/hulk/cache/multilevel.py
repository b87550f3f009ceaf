"""The multi-level cache: L1 in process memory, L2 in Redis, L3 as RocksDB snapshots on disk.

Read path: L1 → L2 → L3 → compute, filling the upper levels on the way back. Writes go through every
level (L3 write-behind, see `hulk.cache.l3_rocks`). With no Redis configured, or none answering, the
cache runs on L1 + L3 and says so once in the log; a native `CircuitBreaker` keeps a dead Redis from
costing callers anything but the first few failed calls, and a background probe brings L2 back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar, overload
from urllib.parse import urlsplit

import orjson
import structlog

from hulk._native import CircuitBreaker, L1Cache
from hulk.cache._tasks import stop_task
from hulk.cache.codec import CorruptRecord, Record, check_namespace, decode, encode, tombstone
from hulk.cache.invalidation import Subscriber, encode_flush_message, encode_message
from hulk.cache.l2_redis import RedisLevel, Unavailable, glob_escape, redact_url
from hulk.cache.l3_rocks import RocksLevel
from hulk.cache.metrics import L1_LATENCY_SAMPLE, CacheMetrics
from hulk.cache.singleflight import SingleFlight

T = TypeVar("T")

log = structlog.get_logger("hulk.cache")

_MISS: Final = object()
_GEN_SLOTS = 1024
_RESYNC_CHUNK = 1000
_FILL_COALESCE = 0.002
_L2_SCHEMES = ("redis", "rediss", "unix")
_FLUSHES_SEEN = "flushes_seen"  # L3 metadata: the flushes (namespace or "*" -> time) applied to it
# The L1 key index may hold this many times `l1_size` keys (evicted ones included) before it is pruned.
_L1_INDEX_SLACK = 2


def _valid_namespace(name: str) -> bool:
    try:
        check_namespace(name)
    except ValueError:
        return False
    return True


def _ttl_ms(expires_at: float, now: float) -> int | None:
    return max(1, int((expires_at - now) * 1000)) if expires_at else None


def _check_ttl(name: str, value: float | None, *, allow_none: bool = True) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be a positive number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class CacheNamespace:
    """The cache API bound to one namespace: keys of one namespace never reach another's entries.

    Get one with `Cache.namespace(name)` (one per tenant at least); the `Cache` itself is its default
    namespace. Values are stored as orjson encodes them (bytes pass through untouched) and come back
    as orjson decodes them, from whichever level: a tuple comes back as a list.
    """

    def __init__(self, cache: Cache, namespace: str) -> None:
        self._cache = cache
        self.namespace_name = check_namespace(namespace)
        self._prefix = namespace + ":"
        self._l1: L1Cache = cache._l1
        self._metrics = cache.metrics
        self._l1_hit = cache.metrics.l1_hit
        self._l1_miss = cache.metrics.l1_miss
        self._countdown = L1_LATENCY_SAMPLE

    def _timed_l1_get(self, full: str) -> Any:
        self._countdown = L1_LATENCY_SAMPLE
        started = time.perf_counter()
        value = self._l1.get(full, _MISS)
        self._metrics.latency["l1"].observe(time.perf_counter() - started)
        return value

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when no level holds a live one.

        Args:
            key: the key within this namespace.
            default: what to return on a miss.
        """
        full = self._prefix + key
        # The hot path: one L1 probe and one counter; one call in L1_LATENCY_SAMPLE is timed.
        self._countdown -= 1
        value = self._l1.get(full, _MISS) if self._countdown else self._timed_l1_get(full)
        if value is not _MISS:
            self._l1_hit.inc()
            return value
        self._l1_miss.inc()
        found = await self._cache._read_lower([full])
        return found.get(full, default)

    @overload
    async def get_or_compute(self, key: str, fn: Callable[[], Awaitable[T]], ttl: float | None = None) -> T: ...

    @overload
    async def get_or_compute(self, key: str, fn: Callable[[], T], ttl: float | None = None) -> T: ...

    async def get_or_compute(self, key: str, fn: Callable[[], Any], ttl: float | None = None) -> Any:
        """The value of `key`; on a miss at every level, `fn()` computes it once and it is stored.

        Concurrent misses on one key (in this instance) run `fn` once; the other callers wait for its
        result, or get its exception. A computed fill is not an overwrite, so it sends no invalidation.

        Args:
            key: the key within this namespace.
            fn: a function or coroutine function that returns the value.
            ttl: time to live in seconds (None: the cache's `l2_ttl`).

        Returns:
            The cached or computed value (as orjson decodes it).

        Raises:
            Exception: whatever `fn` raised (nothing is stored then).
            ValueError: `ttl` is not a positive number.
        """
        full = self._prefix + key
        # The hot path: one L1 probe and one counter; one call in L1_LATENCY_SAMPLE is timed.
        self._countdown -= 1
        value = self._l1.get(full, _MISS) if self._countdown else self._timed_l1_get(full)
        if value is not _MISS:
            self._l1_hit.inc()
            return value
        self._l1_miss.inc()
        if ttl is not None:
            _check_ttl("ttl", ttl)
        return await self._cache._flights.do(full, lambda: self._cache._load_or_compute(full, fn, ttl))

    async def set(self, key: str, value: object, ttl: float | None = None) -> None:
        """Stores `value` under `key` in every level, and invalidates it in the other instances' L1.

        Args:
            key: the key within this namespace.
            value: bytes, or anything orjson serialises.
            ttl: time to live in seconds (None: the cache's `l2_ttl`).

        Raises:
            TypeError: orjson cannot serialise `value`.
            ValueError: `ttl` is not a positive number.
        """
        await self._cache._store([(self._prefix + key, value)], ttl, publish=True)

    async def delete(self, key: str) -> None:
        """Removes `key` from every level here, and from the other instances' L1 and L3."""
        await self._cache._delete([self._prefix + key])

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The live values among `keys`, keyed by key (misses are left out), with one L2 round trip."""
        prefix = self._prefix
        fulls = {prefix + key: key for key in keys}
        found = self._l1.get_many(fulls)
        metrics = self._metrics
        if found:
            metrics.l1_hit.inc(len(found))
        missing = [full for full in fulls if full not in found]
        if missing:
            metrics.l1_miss.inc(len(missing))
            found.update(await self._cache._read_lower(missing))
        return {fulls[full]: value for full, value in found.items()}  # type: ignore[index]

    async def set_many(
        self, items: Mapping[str, object] | Iterable[tuple[str, object]], ttl: float | None = None
    ) -> None:
        """Stores every item in every level with one L2 round trip (and one invalidation message).

        Raises:
            TypeError: orjson cannot serialise a value.
            ValueError: `ttl` is not a positive number.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        prefix = self._prefix
        await self._cache._store([(prefix + key, value) for key, value in pairs], ttl, publish=True)

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Removes every key in `keys` from every level, with one L2 round trip."""
        prefix = self._prefix
        await self._cache._delete([prefix + key for key in keys])


class Cache(CacheNamespace):
    """hulk's multi-level cache, and its default namespace.

    It implements the runtime's component life cycle: `await start()`, `ready()`, `await drain()`,
    `await stop()`, `health()`, plus `metrics_snapshot()` for the metrics reader.

    Invalidation bound: after one instance overwrites or deletes a key, another instance whose
    invalidation subscription is up stops serving the old value from its L1 as soon as the pub/sub
    message arrives (one Redis hop after the write); in every case, including Redis being down, no L1
    entry outlives `l1_ttl` seconds, which is the hard bound.

    Args:
        l1_size: L1 capacity in entries.
        l1_ttl: longest time in seconds an entry stays in L1 (the invalidation hard bound).
        l2_url: Redis URL with its credentials (`redis://user:password@host:port/db`); None or "": no L2.
        l2_ttl: default time to live of an entry, in seconds, when a call gives none (None: no expiry).
        l3_path: RocksDB directory for L3; None: no L3.
        snapshot_interval: seconds between L3 snapshots.
        namespace: the default namespace (tenant) of this object.
        key_prefix: prefix of every Redis key and of the invalidation channel.
        instance_id: this instance's id in invalidation messages (default: random).
        l2_socket_timeout: seconds a Redis call may wait on its socket.
        l2_connect_timeout: seconds a Redis connection attempt may take.
        l2_max_connections: size of the Redis connection pool.
        l2_failure_threshold: failed Redis calls (in the breaker's window) that open the breaker.
        l2_retry_interval: seconds the breaker stays open before the probe tries Redis again.
        tombstone_ttl: seconds a deleted key stays marked as deleted in Redis (default `l2_ttl`, or an
            hour), so that no instance's L3 brings its old value back.
        l3_max_pending: staged L3 writes that trigger an early snapshot.
        max_dirty: keys written while Redis is down that are re-synced when it comes back.
        name: this component's name in the runtime's life cycle.

    Raises:
        ValueError: a parameter is out of range, `l2_url` is not a Redis URL or `namespace` is invalid.
    """

    def __init__(
        self,
        *,
        l1_size: int = 100_000,
        l1_ttl: float = 60.0,
        l2_url: str | None = None,
        l2_ttl: float | None = 3600.0,
        l3_path: str | None = None,
        snapshot_interval: float = 30.0,
        namespace: str = "default",
        key_prefix: str = "hulk:cache:",
        instance_id: str | None = None,
        l2_socket_timeout: float = 0.25,
        l2_connect_timeout: float = 0.25,
        l2_max_connections: int = 128,
        l2_failure_threshold: int = 3,
        l2_retry_interval: float = 1.0,
        tombstone_ttl: float | None = None,
        l3_max_pending: int = 10_000,
        max_dirty: int = 100_000,
        name: str = "cache",
    ) -> None:
        if isinstance(l1_size, bool) or not isinstance(l1_size, int) or l1_size < 1:
            raise ValueError(f"l1_size must be an integer >= 1, got {l1_size!r}")
        self.l1_ttl: float = _check_ttl("l1_ttl", l1_ttl, allow_none=False) or 0.0
        self.l2_ttl = _check_ttl("l2_ttl", l2_ttl)
        self.snapshot_interval = _check_ttl("snapshot_interval", snapshot_interval, allow_none=False) or 0.0
        self.tombstone_ttl = _check_ttl("tombstone_ttl", tombstone_ttl) or self.l2_ttl or 3600.0
        self.l2_socket_timeout = _check_ttl("l2_socket_timeout", l2_socket_timeout, allow_none=False) or 0.0
        self.l2_connect_timeout = _check_ttl("l2_connect_timeout", l2_connect_timeout, allow_none=False) or 0.0
        self.l2_retry_interval = _check_ttl("l2_retry_interval", l2_retry_interval, allow_none=False) or 0.0
        for argument, count in (
            ("l2_max_connections", l2_max_connections),
            ("l2_failure_threshold", l2_failure_threshold),
            ("l3_max_pending", l3_max_pending),
            ("max_dirty", max_dirty),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{argument} must be an integer >= 1, got {count!r}")
        l2_url = l2_url or None
        if l2_url is not None and urlsplit(l2_url).scheme not in _L2_SCHEMES:
            raise ValueError(f"l2_url must be a redis://, rediss:// or unix:// URL, got {redact_url(l2_url)!r}")
        self.name = name
        """The component's name in the runtime."""
        self.l1_size = l1_size
        self.l2_url = l2_url
        self.l3_path = l3_path
        self.key_prefix = key_prefix
        self.channel = key_prefix + "invalidate"
        self.instance_id = instance_id or uuid.uuid4().hex
        self.l2_max_connections = l2_max_connections
        self.l2_failure_threshold = l2_failure_threshold
        self.l3_max_pending = l3_max_pending
        self.max_dirty = max_dirty
        self.metrics = CacheMetrics()
        self._l1 = L1Cache(l1_size, ttl=self.l1_ttl)
        # The keys put in L1, so a flush can find a namespace's entries (L1 cannot list its keys);
        # evicted keys linger until the next prune, which keeps at most a few times `l1_size`.
        self._l1_keys: set[str] = set()
        self._l1_index_limit = _L1_INDEX_SLACK * l1_size + 1024
        # Namespaces (None: all) flushed locally while Redis was away: flushed in Redis when it is back.
        self._pending_flushes: set[str | None] = set()
        self._flush_retry_task: asyncio.Task[None] | None = None
        # The flush log (a Redis hash, namespace or "*" -> time) covers the flush messages an instance
        # missed: read at start and after a subscription gap, a flush newer than what this instance
        # holds (and not yet applied) is applied here too.
        self.flush_log_key = key_prefix + "flushes"
        self._flushes_seen: dict[str, float] = {}
        self._catch_up_task: asyncio.Task[None] | None = None
        self._flights: SingleFlight[Any] = SingleFlight()
        self._gens = [0] * _GEN_SLOTS
        self._l2: RedisLevel | None = None
        self._breaker: CircuitBreaker | None = None
        self._l3: RocksLevel | None = None
        self._subscriber: Subscriber | None = None
        self._dirty: dict[str, tuple[bytes, float, bool]] = {}
        self._fills: dict[str, tuple[bytes, float]] = {}
        self._fills_inflight: dict[str, tuple[bytes, float]] = {}
        self._fills_done: asyncio.Event | None = None
        self._fill_wake: asyncio.Event | None = None
        self._fill_task: asyncio.Task[None] | None = None
        self._dirty_overflow = False
        self._snapshot_task: asyncio.Task[None] | None = None
        self._state = "new"
        self._namespaces: dict[str, CacheNamespace] = {}
        super().__init__(self, namespace)

    # --- namespaces --------------------------------------------------------------------------------

    def namespace(self, name: str) -> CacheNamespace:
        """The API bound to namespace `name` (e.g. a tenant id), sharing this cache's levels.

        Raises:
            ValueError: `name` is not 1–128 characters of letters, digits, `_`, `.` and `-`.
        """
        found = self._namespaces.get(name)
        if found is None:
            found = self._namespaces[name] = CacheNamespace(self, name)
        return found

    # --- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Opens L3, connects L2, subscribes to invalidations, warms L1 from L3 and starts snapshots.

        Never fails because Redis is unreachable or L3 is unreadable: the cache then runs degraded
        and `health()` says so.
        """
        if self._state != "new":
            return
        self._state = "starting"
        if self.l3_path is not None:
            self._l3 = RocksLevel(self.l3_path, max_pending=self.l3_max_pending)
            await self._l3.open()
        if self.l2_url is None:
            log.warning("cache.l2.disabled", reason="no l2_url", mode=self.mode)
        else:
            await self._start_l2(self.l2_url)
        # L1 starts empty: only L3 can hold what a flush made while this instance was away removed.
        # The flushes its L3 has seen are recorded in it; one it has no record of is applied.
        self._flushes_seen = self._l3_flushes_seen()
        await self._catch_up_flushes()
        await self._warm_up()
        if self._l3 is not None and self._l3.available:
            self._snapshot_task = asyncio.create_task(self._snapshot_loop(), name="hulk-cache-l3-snapshots")
        self._state = "running"

    async def _start_l2(self, url: str) -> None:
        self._breaker = CircuitBreaker(
            name="cache-l2",
            failure_rate_threshold=50.0,
            slow_call_duration=self.l2_socket_timeout,
            window_type="count",
            window_size=20,
            minimum_calls=10,
            wait_open=self.l2_retry_interval,
            jitter=0.2,
            half_open_calls=1,
            failure_count_threshold=self.l2_failure_threshold,
        )
        self._l2 = RedisLevel(
            url,
            breaker=self._breaker,
            metrics=self.metrics,
            socket_timeout=self.l2_socket_timeout,
            connect_timeout=self.l2_connect_timeout,
            max_connections=self.l2_max_connections,
            on_recover=self._on_l2_recover,
        )
        up = await self._l2.start()
        self._subscriber = Subscriber(
            self._l2.client,
            self.channel,
            instance_id=self.instance_id,
            on_keys=self._on_invalidated,
            on_gap=self._on_invalidation_gap,
            on_flush=self._on_flushed,
            is_up=lambda: self._l2 is not None and self._l2.up,
            retry_interval=self.l2_retry_interval,
        )
        self._subscriber.start()
        self._fill_wake = asyncio.Event()
        self._fill_task = asyncio.create_task(self._fill_loop(), name="hulk-cache-l2-fills")
        if up:
            await self._subscriber.wait_subscribed(self.l2_connect_timeout + 2 * self.l2_socket_timeout)

    def ready(self) -> bool:
        """True once started and until stopped (a degraded cache is still ready: it serves)."""
        return self._state == "running"

    async def drain(self) -> None:
        """Writes the queued L2 fills and the L3 snapshot now; the cache keeps serving until `stop()`."""
        await self._flush_fills()
        await self.snapshot()

    async def stop(self, timeout: float | None = None) -> None:
        """Stops: background tasks end, queued L2 fills and the last L3 snapshot are written, then closes.

        RocksDB and Redis are closed last.

        Args:
            timeout: seconds to spend at most on the final writes (None: no limit); the levels are
                closed in any case, and what was not written by then is lost from L2 (L3 still
                gets its stage when it closes).
        """
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopping"
        if self._fill_wake is not None:
            self._fill_wake.set()  # the fill loop ends by itself, even if a client swallowed a cancel
        for task in (self._snapshot_task, self._fill_task, self._flush_retry_task, self._catch_up_task):
            await stop_task(task)
        self._snapshot_task = self._fill_task = self._flush_retry_task = self._catch_up_task = None
        try:
            async with asyncio.timeout(timeout):
                await self._flush_fills()
        except TimeoutError:
            log.warning("cache.stop.deadline", timeout=timeout, unwritten_fills=len(self._fills))
        if self._subscriber is not None:
            await self._subscriber.close()
        if self._l3 is not None:
            await self._l3.close()
        if self._l2 is not None:
            await self._l2.close()
        self._state = "stopped"

    async def __aenter__(self) -> Cache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def snapshot(self) -> int:
        """Writes the staged L3 entries now.

        Returns:
            How many entries were written.
        """
        if self._l3 is None:
            return 0
        written = await self._l3.flush()
        if written:
            self.metrics.l3_snapshots.inc()
            self.metrics.l3_snapshot_entries.inc(written)
        return written

    async def _snapshot_loop(self) -> None:
        assert self._l3 is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._l3.flush_wanted.wait(), self.snapshot_interval)
            try:
                await self.snapshot()
            except Exception:
                self.metrics.l3_error.inc()

    async def _warm_up(self) -> None:
        l3 = self._l3
        if l3 is None or not l3.available:
            return
        now = time.time()
        hot = await l3.load_hot(self.l1_size, now)
        if not hot:
            return
        gens = [self._gens[hash(key.decode()) % _GEN_SLOTS] for key, _ in hot]
        chosen: dict[str, bytes] = {}
        l2 = self._l2
        for start in range(0, len(hot), _RESYNC_CHUNK):
            chunk = hot[start : start + _RESYNC_CHUNK]
            fresher: list[bytes | None] | None = None
            if l2 is not None and l2.up:
                answer = await l2.get_many([self.key_prefix + key.decode() for key, _ in chunk])
                fresher = None if isinstance(answer, Unavailable) else answer
            for i, (key, record) in enumerate(chunk):
                newer = fresher[i] if fresher is not None else None
                chosen[key.decode()] = newer if newer is not None else record
        warmed = 0
        for (full, record), gen in zip(chosen.items(), gens, strict=True):
            if self._gens[hash(full) % _GEN_SLOTS] != gen:
                continue
            decoded = self._decode(record, full)
            if decoded is None or decoded.tombstone:
                if l3.available:
                    l3.delete(full.encode())
                continue
            if self._fill_l1(full, decoded, now):
                warmed += 1
        self.metrics.l3_warmed.inc(warmed)
        log.info("cache.l3.warmed", entries=warmed, path=self.l3_path)

    # --- health and metrics ------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The levels in service now: "l1+l2+l3", "l1+l3", "l1+l2" or "l1"."""
        levels = ["l1"]
        if self._l2 is not None and self._l2.up:
            levels.append("l2")
        if self._l3 is not None and self._l3.available:
            levels.append("l3")
        return "+".join(levels)

    def health(self) -> dict[str, Any]:
        """The cache's health and figures per level.

        Returns:
            A dict whose "status" is "starting", "ok", "degraded" (a configured level is out; see
            "reasons") or "stopped", the statuses of the engine's `Health`.
        """
        l2, l3, sub = self._l2, self._l3, self._subscriber
        reasons = []
        if self.l2_url is not None and (l2 is None or not l2.up):
            reasons.append("l2 unavailable")
        if self.l3_path is not None and (l3 is None or not l3.available):
            reasons.append("l3 unavailable")
        if self._dirty_overflow:
            reasons.append("l2 re-sync incomplete")
        if self._state in ("new", "starting"):
            status = "starting"
        elif self._state in ("stopping", "stopped"):
            status = "stopped"
        else:
            status = "degraded" if reasons else "ok"
        return {
            "status": status,
            "state": self._state,
            "mode": self.mode,
            "reasons": reasons,
            "l1": {"size": len(self._l1), "capacity": self._l1.capacity, "ttl": self.l1_ttl},
            "l2": {
                "configured": self.l2_url is not None,
                "up": l2 is not None and l2.up,
                "url": redact_url(self.l2_url) if self.l2_url else None,
                "breaker": self._breaker.metrics() if self._breaker is not None else None,
                "last_error": l2.last_error if l2 is not None else None,
                "outages": l2.outages if l2 is not None else 0,
                "probes": l2.probes if l2 is not None else 0,
                "dirty": len(self._dirty),
            },
            "l3": {
                "configured": self.l3_path is not None,
                "status": l3.status if l3 is not None else "disabled",
                "path": self.l3_path,
                "pending": l3.pending if l3 is not None else 0,
                "set_aside": list(l3.set_aside) if l3 is not None else [],
                "error": l3.error if l3 is not None else None,
            },
            "invalidation": {
                "subscribed": sub is not None and sub.subscribed,
                "received": sub.received if sub is not None else 0,
                "reconnects": sub.reconnects if sub is not None else 0,
            },
        }

    def metrics_snapshot(self) -> dict[str, Any]:
        """Every figure, read now (for the metrics reader, at scrape time).

        Returns:
            Requests by level and result, hit ratios, latencies, evictions, the L2 breaker's state,
            single-flight joins and the current mode.
        """
        snap = self.metrics.snapshot()
        l1_stats = self._l1.stats()
        snap["evictions"] = {"l1": l1_stats["evictions"]}
        snap["l1"] = dict(l1_stats)
        snap["singleflight_joined"] = self._flights.joined
        snap["l2_breaker"] = self._breaker.metrics() if self._breaker is not None else None
        snap["mode"] = self.mode
        snap["l3"]["corrupt_records"] = self._l3.corrupt_records if self._l3 is not None else 0
        return snap

    def breakers(self) -> list[CircuitBreaker]:
        """The circuit breakers of this cache (the one guarding L2, once started), for `hulk_breaker_state`."""
        return [self._breaker] if self._breaker is not None else []

    # --- internals ---------------------------------------------------------------------------------

    def _entry_ttl(self, ttl: float | None) -> float | None:
        return self.l2_ttl if ttl is None else _check_ttl("ttl", ttl)

    def _decode(self, record: bytes, full: str) -> Record | None:
        try:
            return decode(record)
        except CorruptRecord as exc:
            self.metrics.corrupt_records.inc()
            log.warning("cache.record.corrupt", key=full, error=str(exc))
            return None

    def _fill_l1(self, full: str, record: Record, now: float) -> bool:
        ttl = self.l1_ttl
        if record.expires_at:
            remaining = record.expires_at - now
            if remaining <= 0:
                return False
            ttl = min(ttl, remaining)
        self._l1_set(full, record.value, ttl)
        return True

    def _l1_set(self, full: str, value: Any, ttl: float) -> None:
        self._l1.set(full, value, ttl=ttl)
        keys = self._l1_keys
        keys.add(full)
        if len(keys) > self._l1_index_limit:
            l1 = self._l1
            self._l1_keys = {key for key in keys if key in l1}

    def _bump(self, full: str) -> None:
        self._gens[hash(full) % _GEN_SLOTS] += 1

    async def _read_lower(self, fulls: list[str]) -> dict[str, Any]:
        """Looks `fulls` up in L2, then L3, filling the upper levels; returns the values found."""
        gens = [self._gens[hash(full) % _GEN_SLOTS] for full in fulls]
        now = time.time()
        metrics = self.metrics
        found: dict[str, Any] = {}
        hits: list[tuple[str, Record, bytes, int, bool]] = []
        l2_missed: set[str] = set()
        rest = list(range(len(fulls)))
        l2 = self._l2
        if l2 is not None:
            answer = await l2.get_many([self.key_prefix + full for full in fulls])
            if not isinstance(answer, Unavailable):
                rest = []
                for i, record in enumerate(answer):
                    decoded = None if record is None else self._decode(record, fulls[i])
                    if record is None or decoded is None or (decoded.expires_at and decoded.expires_at <= now):
                        metrics.l2_miss.inc()
                        l2_missed.add(fulls[i])
                        rest.append(i)
                    elif decoded.tombstone:
                        metrics.l2_miss.inc()  # deleted: authoritative, L3 is not asked
                    else:
                        metrics.l2_hit.inc()
                        hits.append((fulls[i], decoded, record, i, True))
        l3 = self._l3
        backfill: list[tuple[str, bytes, int | None]] = []
        if rest and l3 is not None and l3.available:
            started = time.perf_counter()
            keys = [fulls[i].encode() for i in rest]
            try:
                records = await l3.get_many(keys)
            except Exception:
                metrics.l3_error.inc()
                records = {}
            metrics.latency["l3"].observe(time.perf_counter() - started)
            for i, key in zip(rest, keys, strict=True):
                record = records.get(key)
                if record is None:
                    metrics.l3_miss.inc()
                    continue
                decoded = self._decode(record, fulls[i])
                if decoded is None or decoded.tombstone:
                    metrics.l3_miss.inc()
                    l3.delete(key)
                    continue
                if decoded.expires_at and decoded.expires_at <= now:
                    metrics.l3_miss.inc()
                    l3.delete(key)
                    continue
                metrics.l3_hit.inc()
                hits.append((fulls[i], decoded, record, i, False))
        for full, decoded, record, i, from_l2 in hits:
            found[full] = decoded.value
            if self._gens[hash(full) % _GEN_SLOTS] == gens[i]:
                # Unchanged meanwhile (no write, invalidation or flush): safe to keep and to spread.
                self._fill_l1(full, decoded, now)
                if from_l2:
                    if l3 is not None:
                        l3.put(full.encode(), record)
                elif full in l2_missed:
                    backfill.append((self.key_prefix + full, record, _ttl_ms(decoded.expires_at, now)))
        if backfill and l2 is not None:
            await l2.write(backfill, fill=True)
        return found

    async def _load_or_compute(self, full: str, fn: Callable[[], Any], ttl: float | None) -> Any:
        found = await self._read_lower([full])
        if full in found:
            return found[full]
        self.metrics.computes.inc()
        started = time.perf_counter()
        try:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            self.metrics.compute_errors.inc()
            raise
        self.metrics.latency["compute"].observe(time.perf_counter() - started)
        stored = await self._store([(full, value)], ttl, publish=False)
        return stored[0]

    async def _fill_loop(self) -> None:
        assert self._fill_wake is not None
        while self._state != "stopping":
            await self._fill_wake.wait()
            # Let the values computed in the next moment join this batch: one round trip for many.
            await asyncio.sleep(_FILL_COALESCE)
            self._fill_wake.clear()
            # One batch, then back to coalescing: looping on what arrived during the write would send
            # one tiny batch per round trip (one per miss for a serial caller).
            await self._flush_fills(once=True)

    def _queue_fills(self, fulls: list[str], records: list[bytes], expires_at: float) -> None:
        l2 = self._l2
        if l2 is None:
            return
        if not l2.up or self._fill_wake is None:
            self._mark_dirty(fulls, records, expires_at, fill=True)
            return
        for full, record in zip(fulls, records, strict=True):
            self._fills[full] = (record, expires_at)
        self._fill_wake.set()

    async def _flush_fills(self, *, once: bool = False) -> None:
        """Writes the queued computed values to L2 (only where no live value is there), in batches.

        Args:
            once: write what is queued now, not what is queued meanwhile.
        """
        l2 = self._l2
        more = True
        while more and self._fills and l2 is not None:
            more = not once
            batch, self._fills = self._fills, {}
            self._fills_inflight = batch
            done = self._fills_done = asyncio.Event()
            try:
                items = list(batch.items())
                for start in range(0, len(items), _RESYNC_CHUNK):
                    now = time.time()
                    chunk = items[start : start + _RESYNC_CHUNK]
                    entries = [
                        (self.key_prefix + full, record, _ttl_ms(expires_at, now))
                        for full, (record, expires_at) in chunk
                        if not expires_at or expires_at > now
                    ]
                    if not await l2.write(entries, fill=True):
                        for full, (record, expires_at) in items[start:]:
                            self._mark_dirty([full], [record], expires_at, fill=True)
                        break
            finally:
                self._fills_inflight = {}
                done.set()

    async def _before_write(self, fulls: list[str]) -> None:
        """Keeps a queued computed value from landing in L2 after a set or delete of the same key."""
        if self._fills:
            for full in fulls:
                self._fills.pop(full, None)
        inflight = self._fills_inflight
        if inflight and self._fills_done is not None and any(full in inflight for full in fulls):
            await self._fills_done.wait()

    async def _store(self, items: list[tuple[str, object]], ttl: float | None, *, publish: bool) -> list[Any]:
        entry_ttl = self._entry_ttl(ttl)
        now = time.time()
        expires_at = now + entry_ttl if entry_ttl else 0.0
        l1_ttl = min(self.l1_ttl, entry_ttl) if entry_ttl else self.l1_ttl
        ttl_ms = max(1, int(entry_ttl * 1000)) if entry_ttl else None
        records = [encode(value, expires_at) for _, value in items]
        values = []
        l3 = self._l3
        for (full, _), record in zip(items, records, strict=True):
            value = decode(record).value
            values.append(value)
            self._bump(full)
            self._l1_set(full, value, l1_ttl)
            if l3 is not None:
                l3.put(full.encode(), record)
        self.metrics.sets.inc(len(items))
        if self._l2 is not None:
            keys = [full for full, _ in items]
            if not publish:
                self._queue_fills(keys, records, expires_at)
                return values
            await self._before_write(keys)
            entries = [(self.key_prefix + full, record, ttl_ms) for full, record in zip(keys, records, strict=True)]
            message = encode_message(self.instance_id, keys)
            if await self._l2.write(entries, channel=self.channel, message=message):
                self.metrics.invalidations_sent.inc()
            else:
                self._mark_dirty(keys, records, expires_at)
        return values

    async def _delete(self, fulls: list[str]) -> None:
        l3 = self._l3
        for full in fulls:
            self._bump(full)
            self._l1.delete(full)
            if l3 is not None:
                l3.delete(full.encode())
        self.metrics.deletes.inc(len(fulls))
        if self._l2 is not None and fulls:
            await self._before_write(fulls)
            expires_at = time.time() + self.tombstone_ttl
            mark = tombstone(expires_at)
            ttl_ms = max(1, int(self.tombstone_ttl * 1000))
            entries = [(self.key_prefix + full, mark, ttl_ms) for full in fulls]
            message = encode_message(self.instance_id, fulls)
            if await self._l2.write(entries, channel=self.channel, message=message):
                self.metrics.invalidations_sent.inc()
            else:
                self._mark_dirty(fulls, [mark] * len(fulls), expires_at)

    def _mark_dirty(self, fulls: list[str], records: list[bytes], expires_at: float, *, fill: bool = False) -> None:
        for full, record in zip(fulls, records, strict=True):
            if full in self._dirty or len(self._dirty) < self.max_dirty:
                self._dirty[full] = (record, expires_at, fill)
            elif not self._dirty_overflow:
                self._dirty_overflow = True
                log.warning("cache.l2.resync_overflow", max_dirty=self.max_dirty)

    async def _on_l2_recover(self) -> None:
        if self._subscriber is not None:
            self._subscriber.notify_up()
        if self._pending_flushes and not await self._replay_flushes():
            return
        if self._l2 is None or not self._dirty:
            self._dirty_overflow = False
            return
        dirty, self._dirty = self._dirty, {}
        items = list(dirty.items())
        for start in range(0, len(items), _RESYNC_CHUNK):
            now = time.time()
            chunk = [
                (full, entry) for full, entry in items[start : start + _RESYNC_CHUNK] if not entry[1] or entry[1] > now
            ]
            written = 0
            for fill in (False, True):
                entries = [
                    (self.key_prefix + full, record, _ttl_ms(expires_at, now))
                    for full, (record, expires_at, is_fill) in chunk
                    if is_fill is fill
                ]
                message = (
                    None if fill else encode_message(self.instance_id, [e[0][len(self.key_prefix) :] for e in entries])
                )
                if entries and not await self._l2.write(
                    entries, fill=fill, channel=None if fill else self.channel, message=message
                ):
                    for full, entry in items[start:]:
                        self._dirty.setdefault(full, entry)
                    return
                written += len(entries)
            self.metrics.l2_resynced.inc(written)
        self._dirty_overflow = False
        log.info("cache.l2.resynced", entries=len(items))

    def _on_invalidated(self, fulls: list[str]) -> None:
        l3 = self._l3
        for full in fulls:
            self._bump(full)
            self._l1.delete(full)
            if l3 is not None:
                l3.delete(full.encode())
        self.metrics.invalidations_received.inc(len(fulls))

    def _on_flushed(self, namespace: str | None, at: float = 0.0) -> None:
        """Another instance flushed `namespace` (None: everything) at `at`: drop it here too."""
        self._flush_local(namespace)
        self._saw_flush("*" if namespace is None else namespace, at)
        self.metrics.invalidations_received.inc()
        log.info("cache.flush.received", namespace=namespace)

    async def _catch_up_flushes(self) -> None:
        """Applies the logged flushes this instance may have missed (newer than what it holds or saw)."""
        l2 = self._l2
        if l2 is None or not l2.up:
            return
        logged = await l2.read_flush_log(self.flush_log_key)
        if isinstance(logged, Unavailable):
            return
        for field, at in sorted(logged.items(), key=lambda item: item[1]):
            if at > self._flushes_seen.get(field, 0.0):
                namespace = None if field == "*" else field
                if namespace is not None and not _valid_namespace(namespace):
                    continue
                self._flush_local(namespace)
                self._saw_flush(field, at)
                log.info("cache.flush.caught_up", namespace=namespace, flushed_at=at)

    def _l3_flushes_seen(self) -> dict[str, float]:
        l3 = self._l3
        record = l3.meta.get(_FLUSHES_SEEN) if l3 is not None else None
        if record is None:
            return {}
        try:
            seen = orjson.loads(record)
        except orjson.JSONDecodeError:
            return {}
        if not isinstance(seen, dict):
            return {}
        return {field: float(at) for field, at in seen.items() if isinstance(at, int | float)}

    def _saw_flush(self, field: str, at: float) -> None:
        """Records that the flush of `field` made at `at` is applied here (in L3 too, for restarts)."""
        if at <= self._flushes_seen.get(field, 0.0):
            return
        self._flushes_seen[field] = at
        if self._l3 is not None:
            self._l3.put_meta(_FLUSHES_SEEN, orjson.dumps(self._flushes_seen))

    def _flush_local(self, namespace: str | None) -> tuple[int, int]:
        """Drops `namespace` (None: all) from L1, L3, the queued fills and the re-sync backlog.

        Returns:
            (L1 entries removed, L3 entries removed).
        """
        # A read in flight must not put back what it read before the flush: every generation moves.
        for slot in range(_GEN_SLOTS):
            self._gens[slot] += 1
        l1 = self._l1
        if namespace is None:
            l1_removed = len(l1)
            l1.clear()
            self._l1_keys = set()
            self._fills = {}
            self._dirty = {}
        else:
            prefix = namespace + ":"
            doomed = [key for key in self._l1_keys if key.startswith(prefix)]
            l1_removed = sum(1 for key in doomed if l1.delete(key))
            self._l1_keys.difference_update(doomed)
            self._fills = {key: fill for key, fill in self._fills.items() if not key.startswith(prefix)}
            self._dirty = {key: entry for key, entry in self._dirty.items() if not key.startswith(prefix)}
        l3_removed = 0
        if self._l3 is not None:
            l3_removed = self._l3.drop_prefix(None if namespace is None else (namespace + ":").encode())
        return l1_removed, l3_removed

    async def _flush_l2(self, namespace: str | None) -> tuple[int, bool]:
        """Removes `namespace` (None: all) from Redis and tells the other instances; (removed, complete)."""
        l2 = self._l2
        if l2 is None:
            return 0, True
        inflight = self._fills_inflight
        if inflight and self._fills_done is not None:
            prefix = "" if namespace is None else namespace + ":"
            if any(key.startswith(prefix) for key in inflight):
                await self._fills_done.wait()  # a fill in flight must not land after the UNLINKs
        at = time.time()
        field = "*" if namespace is None else namespace
        self._saw_flush(field, at)
        message = encode_flush_message(self.instance_id, namespace, at)
        # Told first, the other instances stop back-filling Redis from their L3 during the walk;
        # told again after it, they drop what they read from Redis before the UNLINKs.
        await l2.publish(self.channel, message)
        pattern = glob_escape(self.key_prefix) + ("*" if namespace is None else namespace + ":*")
        removed, complete = await l2.unlink_matching(pattern)
        # Logged after the walk (a flush of everything removes the log too) and before the last
        # message: an instance that misses the messages finds the flush there when it comes back.
        if complete and await l2.log_flush(self.flush_log_key, field, at) and await l2.publish(self.channel, message):
            self.metrics.invalidations_sent.inc()
            return removed, True
        return removed, False

    async def flush(self, namespace: str | None = None) -> int:
        """Empties one namespace (a tenant's), or the whole cache, at every level and in every instance.

        Removes the namespace's entries from this instance's L1 and L3, from Redis (SCAN for the
        keys under this cache's `key_prefix` and namespace, UNLINK in batches; never FLUSHDB, so
        other data in the same Redis database is untouched), and tells the other instances, over the
        invalidation channel, to drop it from their L1 and L3 (the flush is also logged in Redis,
        for instances that miss the message). A value read from Redis or L3 before the flush and
        still in flight is not stored afterwards; a value being computed is stored when it is ready,
        like one computed just after the flush.

        With Redis unavailable the flush still empties L1 and L3 here and does not raise: the cache
        runs degraded, and the Redis part (and the message to the other instances) is done when
        Redis comes back, before anything written meanwhile is re-synced. Until then other
        instances may serve the namespace from their L1 for up to `l1_ttl`.

        Args:
            namespace: the namespace to empty (as given to `namespace()`); None empties every one.

        Returns:
            How many entries were removed, summed over the levels: this instance's L1 entries, its
            L3 entries (on disk or staged) and the Redis keys removed (tombstones of deleted keys
            included). A key held in three levels counts three times; other instances' L1 and L3
            entries are not counted.

        Raises:
            ValueError: `namespace` is not 1-128 characters of letters, digits, `_`, `.` and `-`.
        """
        if namespace is not None:
            check_namespace(namespace)
        l1_removed, l3_removed = self._flush_local(namespace)
        l2_removed, complete = await self._flush_l2(namespace)
        if not complete:
            if namespace is None:
                self._pending_flushes = {None}
            elif None not in self._pending_flushes:
                self._pending_flushes.add(namespace)
            log.warning("cache.flush.l2_deferred", namespace=namespace, reason="l2 unavailable")
            if self._flush_retry_task is None or self._flush_retry_task.done():
                self._flush_retry_task = asyncio.create_task(self._flush_retry_loop(), name="hulk-cache-l2-flush")
        log.info("cache.flushed", namespace=namespace, l1=l1_removed, l2=l2_removed, l3=l3_removed)
        return l1_removed + l2_removed + l3_removed

    async def _flush_retry_loop(self) -> None:
        # A failure too brief to open the breaker brings no recovery callback: retry on a timer.
        while self._pending_flushes and self._state not in ("stopping", "stopped"):
            await asyncio.sleep(self.l2_retry_interval)
            if self._l2 is not None and self._l2.up:
                await self._replay_flushes()

    async def _replay_flushes(self) -> bool:
        """Does the Redis part of the flushes made while Redis was away; False if it went away again."""
        for namespace in sorted(self._pending_flushes, key=lambda name: name or ""):
            removed, complete = await self._flush_l2(namespace)
            if not complete:
                return False
            self._pending_flushes.discard(namespace)
            log.info("cache.flush.l2_replayed", namespace=namespace, l2=removed)
        return True

    def _on_invalidation_gap(self) -> None:
        # Messages may have been missed while unsubscribed: nothing in L1 can be trusted any more.
        for slot in range(_GEN_SLOTS):
            self._gens[slot] += 1
        self._l1.clear()
        log.info("cache.invalidation.resubscribed", l1="cleared")
        # A flush message may have been missed too: its L3 part is caught up from the flush log.
        if self._catch_up_task is None or self._catch_up_task.done():
            self._catch_up_task = asyncio.get_running_loop().create_task(
                self._catch_up_flushes(), name="hulk-cache-flush-catch-up"
            )
