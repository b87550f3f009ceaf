"""Type stubs for `hulk._native`, the compiled core (import it as `hulk.native`).

Blocking notes: every method is O(1) or O(log n) and stays attached to the GIL, except
`BoundedQueue.push` and `BoundedQueue.pop` with a timeout, which release the GIL while they wait.
Every time-dependent method takes an optional `now` (monotonic seconds, see `monotonic()`).
"""

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Final, Literal, Self, TypedDict, TypeVar, final, overload

__version__: Final[str]
build_profile: Final[Literal["debug", "release"]]

def monotonic() -> float:
    """Monotonic seconds from the native clock (CLOCK_MONOTONIC, the same as `time.monotonic()`)."""

# --- errors (module path: hulk.errors) -----------------------------------------------------------

class HulkError(Exception):
    """Base class of every error raised by hulk."""

class QueueEmpty(HulkError):
    """A non-blocking pop (or a timed-out blocking one) found no item."""

class QueueFull(HulkError):
    """The queue is at capacity: the backpressure signal."""

    capacity: int

class QueueClosed(HulkError):
    """Push to a closed queue, or pop from a closed and drained one."""

class BreakerOpen(HulkError):
    """A circuit breaker refused a call."""

    retry_after: float
    name: str

# --- counters ------------------------------------------------------------------------------------

class _HistogramSnapshot(TypedDict):
    buckets: list[float]
    counts: list[int]
    sum: float
    count: int

@final
class Counter:
    """An atomic counter bumped on the hot path and read at scrape time."""

    def __new__(cls) -> Self: ...
    def inc(self, amount: int = 1) -> None:
        """Adds `amount` (default 1)."""

    @property
    def value(self) -> int:
        """The current value."""

@final
class Histogram:
    """A fixed-bucket histogram filled on the hot path and read at scrape time."""

    def __new__(cls, *, buckets: list[float]) -> Self: ...
    def observe(self, value: float) -> None:
        """Records one observation; raises ValueError for NaN."""

    def snapshot(self) -> _HistogramSnapshot:
        """Upper bounds, cumulative counts (+Inf last), sum and count."""

# --- BoundedQueue --------------------------------------------------------------------------------

class _QueueStats(TypedDict):
    pushed: int
    popped: int
    rejected: int

@final
class BoundedQueue:
    """Lock-free bounded MPMC FIFO of Python objects (crossbeam ArrayQueue).

    `try_push`, `try_pop`, `push_many` and `pop_many` never block and stay attached to the GIL;
    `push` and `pop` release the GIL while they wait.

    Args:
        capacity: maximum number of items, 1 to 2**26 (ValueError otherwise).
    """

    def __new__(cls, capacity: int) -> Self: ...
    @property
    def capacity(self) -> int:
        """Maximum number of items."""

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""

    def __len__(self) -> int: ...
    def try_push(self, item: object) -> bool:
        """Appends `item`; False when full (backpressure, counted as rejected). Raises QueueClosed when closed."""

    def try_pop(self) -> Any:
        """Removes the oldest item; raises QueueEmpty when empty (None is a valid item).

        Raises QueueClosed instead when the queue is closed and drained.
        """

    def push(self, item: object, timeout: float | None = None) -> None:
        """Appends, waiting up to `timeout` seconds (None: forever) for room. Releases the GIL while waiting.

        Raises:
            QueueFull: still full after `timeout` (counted as rejected).
            QueueClosed: the queue is (or gets) closed.
            ValueError: `timeout` is negative, NaN or infinite.
        """

    def pop(self, timeout: float | None = None) -> Any:
        """Removes the oldest item, waiting up to `timeout` seconds (None: forever). Releases the GIL.

        Raises:
            QueueEmpty: still empty after `timeout`.
            QueueClosed: the queue is closed and drained.
            ValueError: `timeout` is negative, NaN or infinite.
        """

    def push_many(self, items: Iterable[object]) -> int:
        """Appends items in order until full; returns how many were accepted. Raises QueueClosed.

        The items that did not fit are not queued and count as rejected; an iterable other than a
        list or tuple is read to its end first.
        """

    def pop_many(self, max_items: int) -> list[Any]:
        """Removes up to `max_items` items (may return an empty list).

        Raises:
            ValueError: `max_items` < 1.
            QueueClosed: the queue is closed and drained.
        """

    def close(self) -> None:
        """Closes the queue: waiters wake, pushes raise QueueClosed, remaining items can be popped.

        A push running concurrently with `close()` may still land; its item stays poppable.
        """

    def add_waiter(self, callback: Callable[[], object]) -> bool:
        """Registers a one-shot callback run after the next push or close.

        Returns False, registering nothing, when the queue is already non-empty or closed, so the
        caller pops again instead of waiting. Every registered callback runs on the next push, on
        the pushing thread with the GIL held (an exception is reported as unraisable); asyncio
        consumers use `pop_async`, which registers one callback per event loop. Raises TypeError
        when `callback` is not callable.
        """

    def stats(self) -> _QueueStats:
        """Counters: items pushed, popped and rejected (refused because the queue was full)."""

# --- BackoffScheduler ----------------------------------------------------------------------------

_JitterMode = Literal["none", "full", "equal", "decorrelated"]

@final
class BackoffScheduler:
    """Holds items until they are due; computes exponential backoff delays with jitter.

    The delay for attempt n >= 1 is d = min(max_delay, base * factor**(n-1)), then jitter:
    "none" -> d; "full" -> uniform(0, d); "equal" -> d/2 + uniform(0, d/2);
    "decorrelated" -> min(max_delay, uniform(base, 3 * previous delay of that key)).

    A huge attempt gives max_delay (never inf or NaN). Decorrelated jitter remembers the last delay
    of up to 65,536 recently scheduled keys (at least the 32,768 most recent), beyond the popping
    or cancelling of their entries; an unknown key, and attempt 1, start from `base`.

    Each key has at most one pending entry. Every method is O(log n) amortized, never blocks and
    stays attached to the GIL; an internal lock makes the scheduler safe to share between threads.

    Args:
        base: delay of attempt 1 before jitter, seconds, finite and > 0.
        factor: growth per attempt, finite and >= 1.
        max_delay: cap on every delay, seconds, finite and >= base.
        jitter: "none", "full", "equal" or "decorrelated".
        seed: an int in [0, 2**64) that makes the jitter reproducible; None seeds from the OS.

    Raises:
        ValueError: an argument is out of range (the message names it).
    """

    def __new__(
        cls,
        *,
        base: float,
        factor: float = 2.0,
        max_delay: float,
        jitter: _JitterMode = "full",
        seed: int | None = None,
    ) -> Self: ...
    def delay(self, attempt: int) -> float:
        """Computes one delay for `attempt` (>= 1) without scheduling anything.

        Decorrelated jitter has no key here: it takes the un-jittered delay of `attempt - 1`
        (`base` for attempt 1) as the previous delay.
        """

    def schedule(self, key: str, item: object, attempt: int, now: float | None = None) -> float:
        """Schedules `item` under `key` after the backoff delay for `attempt`; returns its due time.

        Re-scheduling a key replaces its previous entry.
        """

    def schedule_at(self, key: str, item: object, due: float) -> None:
        """Schedules `item` under `key` at the absolute monotonic time `due` (finite).

        Re-scheduling a key replaces its previous entry.
        """

    def cancel(self, key: str) -> bool:
        """Removes the entry of `key`; True if there was one."""

    def pop_due(self, now: float | None = None, max_items: int = 1024) -> list[Any]:
        """Removes and returns the items due at `now` (due <= now), earliest first, at most `max_items`.

        Items due at the same time come out in scheduling order.
        """

    def next_due(self) -> float | None:
        """The earliest due time, or None when empty."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...

# --- CircuitBreaker ------------------------------------------------------------------------------

_BreakerState = Literal["closed", "open", "half_open"]

class _BreakerMetrics(TypedDict):
    state: _BreakerState
    failure_rate: float
    slow_call_rate: float
    calls: int
    failures: int
    slow_calls: int
    rejected: int

@final
class CircuitBreaker:
    """A circuit breaker with resilience4j's semantics (count or time sliding window).

    Rates are percentages, computed once the window holds `minimum_calls` (capped at the window
    size for count windows); the breaker opens when a rate is >= its threshold (or when
    `failure_count_threshold` failures are in the window); a call is slow when its duration is
    strictly greater than `slow_call_duration`. OPEN moves to HALF_OPEN by itself after
    `wait_open` plus up to `jitter * wait_open`; HALF_OPEN allows exactly `half_open_calls` probes.

    Once `half_open_calls` probe outcomes are recorded, their rates decide: OPEN again (a fresh
    jittered wait) or CLOSED with an empty window (`failure_count_threshold` applies to the CLOSED
    window only). A breaker never stays open for good: `force_open` also half-opens after the wait.
    A probe whose outcome is never reported holds its slot until `release` is called for it, so
    callers must end every permitted call with `record_success`, `record_failure` or `release`.
    Outcomes recorded while OPEN (calls permitted before it opened) are ignored, as in resilience4j.

    Every method is O(1) (a time window also steps over the buckets elapsed since its last use, at
    most one pass over them), takes one internal lock and stays attached to the GIL; the clock is
    read at most once per call, and only when the state or window needs it. `now` must be finite.

    Args:
        name: the name carried by BreakerOpen.
        failure_rate_threshold: failure percentage in (0, 100] that opens the breaker.
        slow_call_rate_threshold: slow-call percentage in (0, 100] that opens the breaker.
        slow_call_duration: seconds (finite, >= 0) above which a call is slow.
        window_type: "count" (the last `window_size` calls) or "time" (the last `window_size`
            seconds, in ceil(window_size / bucket_width) buckets).
        window_size: calls (count, at most 1,000,000) or whole seconds (time), >= 1.
        minimum_calls: calls the window must hold before rates are computed, >= 1.
        wait_open: seconds (finite, >= 0) to stay open before half-opening.
        jitter: extra wait as a fraction of `wait_open` in [0, 1], drawn uniformly per opening so
            many breakers do not retry in lockstep.
        half_open_calls: probes permitted in HALF_OPEN, >= 1.
        bucket_width: seconds per time-window bucket, > 0 and (time windows) <= window_size, with
            at most 1,000,000 buckets.
        failure_count_threshold: failures in the window that open the breaker regardless of
            `minimum_calls` (None: off), >= 1.
        seed: seed of the jitter generator in [0, 2**64) (None: from the OS), for reproducible waits.

    Raises:
        ValueError: an argument is out of range; the message names it and its value.
    """

    def __new__(
        cls,
        *,
        name: str = "default",
        failure_rate_threshold: float = 50.0,
        slow_call_rate_threshold: float = 100.0,
        slow_call_duration: float = 60.0,
        window_type: Literal["count", "time"] = "count",
        window_size: int = 100,
        minimum_calls: int = 100,
        wait_open: float = 60.0,
        jitter: float = 0.0,
        half_open_calls: int = 10,
        bucket_width: float = 1.0,
        failure_count_threshold: int | None = None,
        seed: int | None = None,
    ) -> Self: ...
    @property
    def name(self) -> str:
        """The breaker's name."""

    @property
    def state(self) -> _BreakerState:
        """The state: "closed", "open" or "half_open" (reading it applies a due OPEN -> HALF_OPEN move)."""

    def allow(self, now: float | None = None) -> bool:
        """Asks permission for one call (counting half-open probes); False counts as rejected."""

    def acquire(self, now: float | None = None) -> None:
        """Like `allow`, but raises BreakerOpen (with `retry_after`) instead of returning False.

        `retry_after` is 0.0 when the breaker is half-open with every probe slot taken.
        """

    def retry_after(self, now: float | None = None) -> float:
        """Seconds until an open breaker half-opens (0.0 when not open)."""

    def record_success(self, duration: float, now: float | None = None) -> None:
        """Records a permitted call that succeeded after `duration` seconds (finite, >= 0)."""

    def record_failure(self, duration: float, now: float | None = None) -> None:
        """Records a permitted call that failed after `duration` seconds (finite, >= 0)."""

    def release(self, now: float | None = None) -> None:
        """Ends a permitted call with no outcome (cancelled, ignored error), freeing its probe slot."""

    def metrics(self, now: float | None = None) -> _BreakerMetrics:
        """Current state, rates and counters.

        `calls`, `failures` and `slow_calls` describe the window (CLOSED, and OPEN as it was when
        it tripped, still sliding for time windows) or the probes reported so far (HALF_OPEN);
        rates are -1.0 below the minimum number of calls (`half_open_calls` in HALF_OPEN).
        `rejected` counts refusals since creation or the last `reset`.
        """

    def reset(self) -> None:
        """Back to CLOSED with an empty window and `rejected` at zero."""

    def force_open(self, now: float | None = None) -> None:
        """Opens now, as if tripped; it half-opens after the usual (jittered) wait."""

# --- L1Cache -------------------------------------------------------------------------------------

_CacheKey = str | bytes

class _CacheStats(TypedDict):
    hits: int
    misses: int
    inserts: int
    evictions: int
    hit_ratio: float
    size: int
    capacity: int

@final
class L1Cache:
    """Bounded concurrent cache with per-entry TTL and frequency-aware eviction.

    Keys are `str` or `bytes` (`"a"` and `b"a"` are different keys); values are any object. Eviction
    is quick_cache's CLOCK-PRO / S3-FIFO policy (hot, cold and ghost entries), which keeps the
    frequently read working set against one-hit wonders. Expiry is lazy: an expired entry is a miss
    and is dropped when read; until then it holds its slot and counts in `len()`. Entries without a
    TTL never read the clock. Every method is O(1) per key (or per batch item), thread-safe, and
    stays attached to the GIL.

    Args:
        capacity: maximum number of entries, >= 1; `len()` never exceeds it.
        ttl: default time to live in seconds for entries set without one (None: no expiry).

    Raises:
        ValueError: `capacity` < 1, or `ttl` negative or NaN (`math.inf` means no expiry).
    """

    def __new__(cls, capacity: int, *, ttl: float | None = None) -> Self: ...
    @property
    def capacity(self) -> int:
        """Maximum number of entries."""

    def get(self, key: _CacheKey, default: Any = None, now: float | None = None) -> Any:
        """The value of a live entry, or `default`.

        Raises TypeError for a key that is not str or bytes, ValueError for a `now` that is not finite.
        """

    def set(self, key: _CacheKey, value: object, ttl: float | None = None, now: float | None = None) -> None:
        """Stores `value`; `ttl` overrides the cache's default (`math.inf`: no expiry).

        The entry is live while `now < time of set + ttl`. Raises TypeError for a key that is not
        str or bytes, ValueError for a negative or NaN `ttl` or a `now` that is not finite.
        """

    def delete(self, key: _CacheKey) -> bool:
        """Removes `key`; True if it was present (an expired entry not yet dropped counts)."""

    def get_many(self, keys: Iterable[_CacheKey], now: float | None = None) -> dict[_CacheKey, Any]:
        """The live entries among `keys` (misses are left out); reads the clock at most once."""

    def set_many(
        self,
        items: Mapping[str, object]
        | Mapping[bytes, object]
        | Mapping[_CacheKey, object]
        | Iterable[tuple[_CacheKey, object]],
        ttl: float | None = None,
        now: float | None = None,
    ) -> None:
        """Stores every item with the same `ttl`; a bad key or item raises before anything is stored."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool:
        """Whether `key` holds a live entry by the native clock; not counted in the stats."""

    def clear(self) -> None:
        """Removes every entry (entries set meanwhile by other threads may survive)."""

    def stats(self) -> _CacheStats:
        """Hits, misses, inserts, evictions, hit ratio, size and capacity.

        `evictions` counts entries dropped to make room and expired entries dropped when read;
        `hit_ratio` is hits / (hits + misses), 0.0 before any read; `size` is `len()`.
        """

# --- TypeLedger, IdStream, event batches --------------------------------------------------------

_T = TypeVar("_T")

@final
class IdStream:
    """Task ids for native code, made from the blocks of an `IdGenerator`.

    The generator stays the one source of ids: its `block(wall)` starts each block and returns
    the 34 characters the block's 256 ids share, and the Unix time it expires; the ids (that head
    and two lowercase hex digits, "00" to "ff") are made natively. Give a generator to one stream
    only. O(1), attached to the GIL; calls the generator once per block.

    Args:
        generator: an object with `block(wall: float) -> tuple[str, float]` (an `IdGenerator`).
    """

    def __new__(cls, generator: Any) -> Self: ...
    def next_id(self, wall: float) -> str:
        """One new id at Unix time `wall` (seconds); a new block when the current one is used up or expired.

        Raises:
            ValueError: `wall` is not finite, or the generator's head is not ASCII.
        """

@final
class TaskMaker:
    """Makes new task records, as `task_class(type, payload, id=..., ...)` makes them, in one call.

    Args:
        task_class: the task record class (as for `TypeLedger`).

    Raises:
        TypeError: `task_class` lacks one of the task fields as a writable object slot.
    """

    def __new__(cls, task_class: type) -> Self: ...
    def make(
        self,
        type: str,
        payload: object,
        id: str,
        tenant: str,
        idempotency_key: str | None,
        max_retries: int | None,
        timeout: float | None,
        priority: int,
        trace: dict[str, str] | None,
        created_at: float,
    ) -> Any:
        """A new record: not submitted (status None), attempt 0, no times but `created_at`, no outcome."""

@final
class TypeLedger:
    """One task type's hot-path bookkeeping, fused: one native call per task transition.

    Holds the type's queue, counters, histograms and (optional) breaker, and the pool's event
    buffer, new-task list, live index and id stream; writes the task records itself. `accept`
    makes a task record (an instance of `task_class`, every field set), queues and counts it,
    appends it to `fresh` and buffers its `(task, None, queued, wall)` event; `begin` moves a
    queued task to running (attempt + 1, start time), buffers the event, asks the breaker and
    counts the start and the wait; `succeed` sets the result, end time and succeeded status,
    buffers the event, tells the breaker, counts the success and the duration and takes the task
    out of `live` when it is there.

    Fields are written through the class's `__slots__` member descriptors (checked when the
    ledger is made; every call checks that the task is an instance of `task_class`). Every
    method is O(1) but for `accept_many` (one `accept` per payload), stays attached to the GIL
    and takes at most the breaker's lock.

    Args:
        queue: where tasks are queued.
        submitted: counts accepted (and `push`ed) tasks.
        started: counts attempts the breaker allowed.
        succeeded: counts `succeed` calls.
        latency: receives each start's wait since `queued_at` (negative values as 0).
        duration: receives each success's duration since `started_at` (negative values as 0).
        task_class: the task record class: a `__slots__` class with the fields of `hulk.engine.Task`.
        runtime: stored in each new task's `_rt`.
        type_name: stored in each new task's `type`.
        retries: a new task's `max_retries` when `accept` is given None.
        timeout: a new task's `timeout` when `accept` is given None.
        statuses: the (queued, running, succeeded) status objects.
        pending: the event buffer the ledger appends to.
        fresh: the list new tasks are appended to (the pool files them in `live` lazily).
        live: the live index by id.
        ids: where new tasks' ids come from.
        breaker: asked by `begin`, told by `succeed` (None: none).

    Raises:
        TypeError: `task_class` lacks one of the fields as a writable object slot.
    """

    def __new__(
        cls,
        *,
        queue: BoundedQueue,
        submitted: Counter,
        started: Counter,
        succeeded: Counter,
        latency: Histogram,
        duration: Histogram,
        task_class: type,
        runtime: object,
        type_name: str,
        retries: object,
        timeout: object,
        statuses: tuple[object, object, object],
        pending: EventBuffer,
        fresh: list[Any],
        live: dict[str, Any],
        ids: IdStream,
        breaker: CircuitBreaker | None = None,
    ) -> Self: ...
    def push(self, task: object) -> bool:
        """Queues an existing `task` and counts it submitted; False (nothing counted) when full.

        Raises:
            QueueClosed: the queue is closed.
        """

    def accept(
        self,
        payload: object,
        wall: float | None,
        tenant: str,
        idempotency_key: str | None,
        retries: int | None,
        timeout: float | None,
        priority: int,
        trace: dict[str, str] | None,
    ) -> Any | None:
        """Makes a queued task of this type created at Unix time `wall` (None: read the system clock).

        Returns:
            The task, or None (nothing kept but a used id) when the queue is full.

        Raises:
            QueueClosed: the queue is closed.
            ValueError: `wall` is not finite.
        """

    def accept_many(
        self,
        payloads: Iterable[object],
        wall: float,
        tenant: str,
        retries: int | None,
        timeout: float | None,
        priority: int,
        trace: dict[str, str] | None,
    ) -> list[Any]:
        """`accept` for each payload in turn (no idempotency key, one creation time) until the queue is full.

        Returns:
            The accepted tasks: one per payload of a prefix of `payloads`.
        """

    def begin(self, task: object, now: float, offset: float) -> int:
        """Starts an attempt of `task` at monotonic `now` (`now + offset` is its Unix start time).

        Returns:
            1 started; 2 started, and the task carries a trace context; 0 the breaker refused
            (nothing changed but the breaker's refusal count); -1 the task is no longer queued
            (nothing changed).

        Raises:
            TypeError: `task` is not an instance of `task_class`.
            ValueError: `now` or `now + offset` is not finite.
        """

    def succeed(self, task: object, result: object, now: float, offset: float) -> bool:
        """Ends `task`'s running attempt with `result` at monotonic `now`.

        A cached result (`task.cached`) frees the breaker's probe slot instead of counting as a
        success of the dependency.

        Returns:
            True when the task has a delivery to settle (`task._delivery` is not None).

        Raises:
            TypeError: `task` is not an instance of `task_class`.
            ValueError: `now` or `now + offset` is not finite.
        """

@final
class EventBuffer:
    """Where the worker pool buffers task events between flushes: four references per event.

    No tuple is made per event (three garbage-collected allocations per task on the hot path);
    `take` hands the events over as an `EventBatch`. `TypeLedger`s append to it natively.
    """

    def __new__(cls) -> Self: ...
    def append(self, task: object, previous: object, status: object, at: object) -> None:
        """Appends the event `(task, previous, status, at)`."""

    def take(self) -> EventBatch:
        """The buffered events as a batch, in order; the buffer is left empty."""

    def __len__(self) -> int: ...

@final
class EventBatch(Sequence[tuple[Any, Any, Any, Any]]):
    """A batch of task events: a read-only sequence of `(task, previous, status, at)` tuples.

    The tuples are made when read (by index, slice or iteration); native readers
    (`tasks_entering`, `RecordEncoder.events`) read the events in place.
    """

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> tuple[Any, Any, Any, Any]: ...
    @overload
    def __getitem__(self, index: slice, /) -> list[tuple[Any, Any, Any, Any]]: ...
    def __iter__(self) -> EventBatchIterator: ...

@final
class EventBatchIterator(Iterator[tuple[Any, Any, Any, Any]]):
    """Iterates an `EventBatch`'s tuples, in order."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> tuple[Any, Any, Any, Any]: ...

@final
class TaskRunner:
    """Runs a worker pool's plain attempts natively, a batch of queued tasks per call.

    A plain attempt is one of a task with no trace context, whose type (`task._rt`) has a
    `direct` handler (an `async def` awaited with the payload) and no concurrency `limit`, and
    whose breaker (if any) is closed. `run` begins it through its type's `TypeLedger`, sets
    `current` to the task, calls the handler, sends its coroutine None once and, when that
    returns a value that is JSON (a None/str/int/float/bool, or whatever `check_result` accepts),
    succeeds it and calls `settle(task)` if it has a delivery. Attached to the GIL throughout.

    Args:
        task_class: the task record class (as for `TypeLedger`).
        current: the `ContextVar` set to each task before its handler is called (never reset).
        clock: monotonic seconds for the start and end times (None: the native monotonic clock).
        check_result: called with a result that is not a scalar; raises if it is not JSON.
        settle: called with a succeeded task that has a delivery.
        resumed: `resumed(coroutine, yielded)` makes the awaitable for the rest of a coroutine
            that suspended at its first step, having yielded `yielded`.
        raised: `raised(error)` makes an awaitable that raises `error`.

    Raises:
        TypeError: `task_class` lacks one of the task fields as a writable object slot.
    """

    def __new__(
        cls,
        *,
        task_class: type,
        current: ContextVar[Any],
        clock: Callable[[], float] | None,
        check_result: Callable[[Any], object],
        settle: Callable[[Any], object],
        resumed: Callable[[Any, Any], Awaitable[Any]],
        raised: Callable[[BaseException], Awaitable[Any]],
    ) -> Self: ...
    def run(self, items: list[Any], offset: float) -> int:
        """Runs the plain attempts at the front of `items`; `offset` turns monotonic into Unix time.

        Returns:
            How many tasks it is done with (each succeeded, or was no longer queued). When fewer
            than all, the task at that index is either not begun (`take()` is None) or begun with
            its handler called (`take()` is the rest of the attempt: its coroutine suspended, it
            raised, or its result failed `check_result`).

        An error before a task is begun leaves it to the Python path (`take()` is None); one
        after it is begun is raised by the rest of its attempt (`take()`).

        Raises:
            BaseException: what a `settle` call raised (the task at `position()` is settled).
        """

    def take(self) -> Awaitable[Any] | None:
        """The rest of the attempt the last `run` stopped at, once; None when it was not begun."""
    def position(self) -> int:
        """The index in `items` of the task the last `run` was at when it returned or raised."""

    def running(self) -> Any | None:
        """The task whose handler `run` is calling right now, else None (a handler asking about itself)."""

def tasks_entering(events: Iterable[tuple[_T, object, object, object]], statuses: tuple[object, ...]) -> list[_T]:
    """The tasks of the `(task, previous, status, at)` events whose status is one of `statuses`, in order.

    Statuses are compared by identity. One pass, attached to the GIL.

    Raises:
        TypeError: an event is not a tuple of at least three items.
    """

def distinct_tasks(events: Iterable[tuple[_T, object, object, object]]) -> list[_T]:
    """The tasks of the `(task, previous, status, at)` events, each once (by identity), in order of first appearance.

    Raises:
        TypeError: an event is not a tuple of four items.
    """

def tasks_not_in(tasks: list[_T], statuses: tuple[object, ...]) -> list[_T]:
    """The tasks whose `status` attribute is none of `statuses` (by identity), in order."""

@final
class RecordEncoder:
    """Task records as JSON, read natively from the task's `__slots__` (rust/src/records.rs).

    `encode(task)` gives what `orjson.dumps(task.to_dict())` gives: the same keys in the same
    order, floats as their shortest text, `null` for NaN and the infinities. Values that are not
    plain dicts (with str keys), lists, tuples, str, int, float, bool or None go through
    `fallback`, which raises its own error for what JSON cannot hold. Attached to the GIL.

    Args:
        task_class: the task record class (`hulk.engine.task.Task`), checked once like the ledger's.
        fallback: encodes any other value to JSON bytes (`orjson.dumps`).

    Raises:
        TypeError: `task_class` lacks one of the record's `__slots__` fields.
    """

    def __new__(cls, task_class: type, fallback: Callable[[Any], bytes]) -> Self: ...
    def encode(self, task: Any) -> bytes:
        """The task's record as JSON.

        Raises:
            TypeError: `task` is not an instance of `task_class`, or `fallback` did not return bytes.
            AttributeError: a field of the task is unset.
        """

    def events(
        self, events: Iterable[tuple[Any, object, object, float]], kinds: Mapping[Any, str]
    ) -> dict[str, tuple[bytes, int]]:
        """The JSON objects of `(task, previous, status, at)` transitions, grouped by event kind.

        Returns `{kind: (objects, count)}`: each kind's objects comma-separated (a JSON array
        without its brackets), in order. The kind is "created" when `previous` is None, else
        `kinds[status]` ("updated" for a status not in it). Each object is `{"task_id", "type",
        "tenant", "attempt", "at"}`, plus `"error": "<type>: <message>"` for a "retrying" or
        "failed" transition of a task that has an error.

        Raises:
            TypeError: as `encode`, or an event that is not a tuple.
            ValueError: an event tuple shorter than four items.
        """

    def messages(self, prefix: str, tasks: Iterable[Any]) -> list[tuple[str, bytes]]:
        """`(prefix + task.id, encode(task))` for each task: the KV messages of a group of records.

        Raises:
            ValueError: a task id cannot be a KV key ([-/_=.a-zA-Z0-9]+, no leading or trailing dot).
            TypeError: as `encode`.
        """

def is_kv_key(key: str) -> bool:
    """True when `key` can be a JetStream KV key (and so a task id).

    `[-/_=.a-zA-Z0-9]+`, not starting or ending with a dot. Attached to the GIL.
    """

def pub_frames(
    messages: Iterable[tuple[str, bytes, str, Mapping[str, str] | None]], max_payload: int
) -> tuple[bytes, int]:
    """The NATS `PUB`/`HPUB` frames of `(subject, payload, reply, headers)` messages, in one buffer.

    Returns the buffer and the sum of the payload sizes. Formats only what it can vouch for:
    subjects and replies of printable ASCII without spaces, header names that are HTTP tokens,
    header values of printable ASCII with no space at either end.

    Raises:
        ValueError: a part outside those rules, or a payload over `max_payload` (format that group
            with nats-py's own rules instead: `hulk.messaging.frames.frames_of` does).
        TypeError: a message that is not `(str, bytes, str, dict | None)`.
    """

def pub_group_frames(
    messages: list[tuple[str, bytes]], headers: Mapping[str, str] | None, reply: str, max_payload: int
) -> tuple[bytes, int]:
    """The frames of a group of `(subject, payload)` messages sharing `headers`, the last with `reply`.

    The same bytes `pub_frames` makes of `(subject, payload, reply if last else "", headers)`, with
    no tuple per message and the header lines formatted once.

    Returns:
        The frames in one buffer, and the payload bytes.

    Raises:
        ValueError: a part it does not format itself (as `pub_frames`).
        TypeError: a message is not a `(str, bytes)` tuple.
    """
