"""The worker pool: runs tasks from the native queue with timeouts, retries, breakers and limits.

How a task runs, and why it is cheap:

- `submit` checks the type, pushes the task into the native `BoundedQueue` (a full queue raises
  `QueueFull` at once: backpressure) and appends a `created` event. Nothing else grows: delayed
  tasks are bounded by `max_scheduled`, parked ones count against the queue's capacity.
- `workers` long-lived worker coroutines take tasks in batches (`pop_many`) and await the handler
  inline: no asyncio task, timer, lock or log line per task. A sync handler runs in a bounded thread
  pool (a process pool if declared), so it never blocks the loop.
- One timer, the tick (`tick_interval`), watches every worker's deadline in one pass (the
  watchdog), releases due retries and delayed tasks from the native `BackoffScheduler`s, reports
  breakers that stay open and auto-scales the worker count. A timed-out async handler is cancelled
  at its current await; a timed-out sync handler's thread cannot be stopped, so its attempt is
  marked timed out, its worker moves on and the thread's eventual result is discarded (the thread
  stays busy until the function returns: with every `sync_threads` thread stuck, the sync attempts
  waiting for a thread time out in turn, since an attempt's clock starts when its worker takes it).
- Transitions are appended to a buffer and handed to the status store and the event sink once per
  event-loop turn; metrics are native counters bumped inline and read at scrape time.
- The per-task ledger is native: each task type has a `hulk._native.TypeLedger` that does a whole
  transition in one call: `accept` (make the task record, id included, queue it, count it,
  buffer its event), `begin` (status check, breaker, running status, attempt, start time, event,
  start count, wait histogram) and `succeed` (result, end time, status, event, breaker evidence,
  success count, duration histogram). Python is left to check arguments, call the handler and
  handle the rare paths (failures, retries, refusals, cancels), which stay in this module.
- Plain attempts run natively, a batch per call: `hulk._native.TaskRunner` begins each task,
  sets the current task, calls an `async def` handler and drives its coroutine one step, then
  succeeds it, for the tasks at the front of a batch taken from the queue. The first one that
  needs more (a suspended coroutine, an error, a limit, a trace, a breaker that is not closed)
  comes back to the Python loop, which awaits the rest of it like any other attempt.
- Live tasks are filed by id lazily: accepting a task only appends it to a list, and `_index()`
  files the unfinished ones when someone looks a task up (or the list grows past a bound).

Limits worth knowing: the native queue holds `queue_size` tasks and a worker may hold one more batch
(`batch_size`) taken from it; tasks run in submission order (`priority` is carried for the intake
layer, not used to reorder here); a handler that never awaits holds the loop for as long as it runs
(the watchdog cannot interrupt it: declare CPU-bound work `executor="process"` or make it sync).

Task context and cacheable types: each worker sets `hulk.context`'s cache variable once and the
current task before each attempt (one ContextVar set, never reset; a sync handler's thread gets a
copy of that context). With a cache (`CacheLike`, e.g. `hulk.cache.Cache`), an attempt of a type declared
`cache_ttl` first reads `result_key(type, canonical_payload(payload))` in the tenant's namespace: a
hit succeeds without calling the handler (`task.cached`, the type's `cache_hits` counter; a breaker
probe it took is released, not counted as a success); a miss runs the handler and stores a result
that passed the JSON check before the task succeeds. A cache that fails is logged and bypassed.
Other types take the plain path, with no lookup.

External delivery (service mode): a task submitted with a `Delivery` (a NATS message, say) is not
retried locally: the pool calls `delivery.on_retry(task, delay)` (nak with delay) and
`delivery.on_terminal(task)` (ack or term), and exposes `free_slots()` and `running_deliveries()`
so the consumer fetches only for free slots and sends progress acks. `drain` hands back the tasks
not started, with their deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import multiprocessing
import time
import types
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor as _Executor
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson
import structlog
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hulk._native import (
    BackoffScheduler,
    BoundedQueue,
    CircuitBreaker,
    EventBuffer,
    Histogram,
    IdStream,
    TaskRunner,
    TypeLedger,
    tasks_not_in,
)
from hulk.context import current_task_var, runtime_cache_var
from hulk.engine.clock import Clock, SystemClock
from hulk.engine.config import BackoffPolicy, BreakerPolicy, EngineConfig
from hulk.engine.errors import DuplicateTask, EngineStopped, IllegalTransition, PayloadError, UnknownTaskType
from hulk.engine.events import EventSink, NullEventSink
from hulk.engine.ids import IdGenerator
from hulk.engine.lifecycle import Health
from hulk.engine.metrics import EngineMetrics, TypeMetrics
from hulk.engine.registry import Registry, TaskSpec
from hulk.engine.store import StatusStore
from hulk.engine.task import TERMINAL, Task, TaskError, TaskStatus
from hulk.errors import QueueClosed, QueueFull
from hulk.keys import canonical_payload, result_key

__all__ = ["CacheLike", "CacheNamespaceLike", "Delivery", "DrainResult", "WorkerPool"]

_log = structlog.get_logger("hulk.engine.pool")
# A proxy until the process installs a tracer provider (`hulk.observability.setup_tracing`).
_TRACER = otel_trace.get_tracer("hulk.engine")
_PROPAGATOR = TraceContextTextMapPropagator()
_SAMPLED_FLAGS = frozenset("13579bdfBDF")  # last hex digit of the W3C flags with the sampled bit set


def _sampled(trace: dict[str, str]) -> bool:
    """True when the task's `traceparent` says its trace is recorded (flags & 01)."""
    traceparent = trace.get("traceparent", "")
    return len(traceparent) == 55 and traceparent[-1] in _SAMPLED_FLAGS


SCHEDULED = TaskStatus.SCHEDULED
QUEUED = TaskStatus.QUEUED
RUNNING = TaskStatus.RUNNING
RETRYING = TaskStatus.RETRYING
SUCCEEDED = TaskStatus.SUCCEEDED
DEAD = TaskStatus.DEAD
CANCELLED = TaskStatus.CANCELLED

_SUBMITTABLE = frozenset({None, QUEUED, SCHEDULED, RETRYING})
_ENDED = (SUCCEEDED, DEAD, CANCELLED)
_HELD = frozenset({SCHEDULED, RETRYING})

# Why a running attempt is being cancelled by the engine (None: not at all).
_TIMEOUT = 1
_CANCEL = 2
_SHUTDOWN = 3

_LOOP = 0
_THREAD = 1
_PROCESS = 2

# Results of these types are JSON by construction; containers are checked with orjson.
_JSON_SCALARS = frozenset({type(None), str, int, float, bool})

_new_task = object.__new__
_dumps = orjson.dumps

# Payloads that are JSON by construction and small: no need to serialise them to check.
_TRIVIAL_PAYLOADS = frozenset({bool, float})

_set_current_task = current_task_var.set

# What a cache lookup returns on a miss (a stored None result is a hit).
_MISS: Any = object()


class CacheNamespaceLike(Protocol):
    """One namespace (a tenant's) of the runtime's cache: what the engine and handlers use."""

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when none is live."""
        ...

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Stores JSON-serialisable `value` under `key` for `ttl` seconds (None: the cache's default)."""
        ...


class CacheLike(Protocol):
    """The runtime's cache as the engine sees it (`hulk.cache.Cache` is one; the engine never imports it)."""

    def namespace(self, name: str) -> CacheNamespaceLike:
        """The namespace `name` (a tenant id); raises ValueError for a name it cannot use."""
        ...


@runtime_checkable
class Delivery(Protocol):
    """How an externally delivered task (a broker message) is settled.

    Both methods are called on the event loop and must not block: schedule the I/O (ack, nak)
    and return.
    """

    def on_retry(self, task: Task, delay: float) -> None:
        """The task should run again in `delay` seconds (nak with delay); the pool forgets it."""
        ...

    def on_terminal(self, task: Task) -> None:
        """The task reached succeeded, dead or cancelled (ack; term for dead)."""
        ...


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What a drain hands back so that nothing is lost.

    Attributes:
        not_started: tasks accepted but never started (queued, delayed or waiting for a retry),
            with their deliveries; requeue them (their status is unchanged).
        interrupted: tasks whose attempt was still running at the deadline and was cut short;
            they are `retrying` with error TaskInterrupted; requeue them too.
        finished_in_time: True when every running attempt ended before the deadline.
    """

    not_started: list[tuple[Task, Delivery | None]] = field(default_factory=list)
    interrupted: list[tuple[Task, Delivery | None]] = field(default_factory=list)
    finished_in_time: bool = True

    @property
    def tasks(self) -> list[Task]:
        """Every handed-back task, not started first."""
        return [task for task, _ in self.not_started] + [task for task, _ in self.interrupted]


class _TypeRuntime:
    """A handler bound to this pool: resolved policies, its breaker, scheduler, limit and metrics."""

    __slots__ = (
        "active",
        "breaker",
        "cache_hits_inc",
        "cache_ttl",
        "call_mode",
        "direct",
        "fail_fast",
        "fn",
        "kind",
        "ledger",
        "limit",
        "metrics",
        "mode",
        "parked",
        "pass_task",
        "retries",
        "scheduler",
        "spec",
        "timeout",
    )

    def __init__(
        self,
        spec: TaskSpec,
        config: EngineConfig,
        scheduler: BackoffScheduler,
        breaker: CircuitBreaker | None,
        fail_fast: bool,
        metrics: TypeMetrics,
        queue: BoundedQueue,
        latency: Histogram,
        pending: EventBuffer,
        fresh: list[Task],
        live: dict[str, Task],
        ids: IdStream,
        has_cache: bool = False,
    ) -> None:
        self.spec = spec
        self.fn = spec.fn
        self.kind = {"loop": _LOOP, "thread": _THREAD, "process": _PROCESS}[spec.executor]
        self.pass_task = spec.pass_task
        self.timeout = config.timeout if spec.timeout is None else spec.timeout
        self.retries = config.max_retries if spec.retries is None else spec.retries
        self.scheduler = scheduler
        self.breaker = breaker
        self.fail_fast = fail_fast
        self.limit = spec.concurrency or 0
        self.active = 0
        self.parked: deque[Task] = deque()
        self.metrics = metrics
        # What the worker loop needs, one attribute away: how to call the handler (0: await
        # fn(payload), 1: await fn(payload, task=task), 2: off the loop, 3: through the result
        # cache, which then calls it the `call_mode` way) and the native ledger, which does one
        # transition per call: accept (a new task record, queued, counted, its event buffered),
        # begin (breaker, record, count, wait histogram, event) and succeed (record, event,
        # breaker evidence, count, duration histogram).
        self.call_mode = 2 if self.kind != _LOOP else (1 if self.pass_task else 0)
        self.cache_ttl = spec.cache_ttl if has_cache else None
        self.mode = 3 if self.cache_ttl is not None else self.call_mode
        # The handler itself when the worker may await `fn(payload)` directly (mode 0).
        self.direct = self.fn if self.mode == 0 else None
        self.cache_hits_inc = metrics.cache_hits.inc
        self.ledger = TypeLedger(
            queue=queue,
            submitted=metrics.submitted,
            started=metrics.started,
            succeeded=metrics.succeeded,
            latency=latency,
            duration=metrics.duration,
            task_class=Task,
            runtime=self,
            type_name=spec.name,
            retries=self.retries,
            timeout=self.timeout,
            statuses=(QUEUED, RUNNING, SUCCEEDED),
            pending=pending,
            fresh=fresh,
            live=live,
            ids=ids,
            breaker=breaker,
        )


class _Worker:
    """One worker coroutine's state, read by the watchdog."""

    __slots__ = ("aio", "interrupt", "number", "retire", "sleeping", "task")

    def __init__(self, number: int) -> None:
        self.number = number
        self.task: Task | None = None
        self.interrupt = 0
        self.retire = False
        self.sleeping: asyncio.Future[None] | None = None
        self.aio: asyncio.Task[None] | None = None


def _queue_full(capacity: int) -> QueueFull:
    err = QueueFull(f"queue full (capacity {capacity}), retry later")
    err.capacity = capacity
    return err


def _check_result(result: Any) -> None:
    try:
        orjson.dumps(result)
    except TypeError as exc:
        raise PayloadError(f"handler result is not JSON-serialisable: {exc}") from None


def _settle(task: Task) -> None:
    """Tells a finished task's delivery (the intake message it came from) that it is terminal."""
    delivery = task._delivery
    try:
        delivery.on_terminal(task)
    except Exception:
        _log.exception("delivery_on_terminal_failed", task_id=task.id)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """The rest of a handler's coroutine that the native runner started and that suspended.

    `yielded` is what its first step gave up (the future it waits for): handed to the worker's
    asyncio task as if the worker had awaited the coroutine itself, then `yield from` relays the
    rest. What the task throws in meanwhile (a timeout's or a cancel's CancelledError) goes to
    the coroutine, as `await` would.
    """
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown into the handler, as `await` does
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        if sent is None:  # what asyncio always sends: from here on, plain delegation
            return (yield from coro)
        try:
            yielded = coro.send(sent)
        except StopIteration as stop:
            return stop.value


async def _raised(error: BaseException) -> Any:
    """Raises `error`, a handler's own, where the worker awaits the attempt (native runner)."""
    raise error


class WorkerPool:
    """Runs submitted tasks on worker coroutines; a `Component` named "pool".

    Args:
        registry: the handlers.
        config: engine settings.
        clock: time source (default: the system clock).
        store: status store fed with every transition batch (None: none).
        events: event sink fed with every transition batch (None: none).
        metrics: native metrics to fill (None: new ones).
        ids: id generator for tasks submitted without an id.
        on_dead: callbacks run with each task that turns dead (the dead-letter hook); a callback
            may return an awaitable, which is scheduled on the loop.
        cache: the runtime's cache, for `hulk.context.cache()` and cacheable task types (None: none).
    """

    def __init__(
        self,
        registry: Registry,
        config: EngineConfig | None = None,
        *,
        clock: Clock | None = None,
        store: StatusStore | None = None,
        events: EventSink | None = None,
        metrics: EngineMetrics | None = None,
        ids: IdGenerator | None = None,
        on_dead: Sequence[Callable[[Task], object]] = (),
        cache: CacheLike | None = None,
    ) -> None:
        self.config = config = config if config is not None else EngineConfig()
        self.cache = cache
        self.registry = registry
        self.clock = clock = clock if clock is not None else SystemClock()
        self._now: Callable[[], float] = clock.monotonic
        # True when timestamps must come from `clock` (not the system clock the native code reads).
        self._clocked = type(clock) is not SystemClock
        if not self._clocked:
            self._now = time.monotonic
        self._wall = clock.wall_offset()
        self.store = store
        self.events = events if events is not None else NullEventSink()
        self.metrics = metrics if metrics is not None else EngineMetrics()
        self._ids = ids if ids is not None else IdGenerator(seed=config.seed)
        # The one source of ids, for the native ledgers and the Python paths alike.
        self._id_stream = IdStream(self._ids)
        self._next_id = self._id_stream.next_id
        self._runner = TaskRunner(
            task_class=Task,
            current=current_task_var,
            clock=self._now if self._clocked else None,
            check_result=_check_result,
            settle=_settle,
            resumed=_resumed,
            raised=_raised,
        )
        self._max_payload = config.max_payload_bytes
        self._idempotent: OrderedDict[tuple[str, str], Task] = OrderedDict()
        self.on_dead: list[Callable[[Task], object]] = list(on_dead)

        self._q = BoundedQueue(config.queue_size)
        self._capacity = config.queue_size
        self._batch = config.batch_size
        # Tasks taken from the queue per event-loop turn, at most: with hundreds of workers ready,
        # each taking a batch, one turn could run every queued task before the loop reads a
        # socket again, and the acknowledgements and fetches that keep the pipeline full wait.
        self._turn_budget = 4 * config.batch_size
        self._turn_taken = 0
        self._turn_armed = False
        self._local: deque[Task] = deque()
        # Live tasks by id, filed lazily: the native ledgers only append new tasks to `_fresh`
        # (a dictionary write per task, hashing a fresh id, costs more than the rest of
        # accepting it); `_index()` files the unfinished ones when someone looks a task up, or
        # once `_fresh` outgrows `_fresh_limit`. A task that ends leaves `_live` if it is there.
        self._live: dict[str, Task] = {}
        self._fresh: list[Task] = []
        self._fresh_limit = max(4096, 2 * config.queue_size)
        # Transitions since the last flush, kept natively with no tuple per event (see
        # `hulk._native.EventBuffer`); the buffer is never replaced: flush takes its batch.
        self._pending = EventBuffer()
        self._flush_armed = False
        self._wake_armed = False
        self._sleepers: list[_Worker] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._parked_count = 0
        self._workers: list[_Worker] = []
        self._worker_numbers = 0
        self._interrupted: list[tuple[Task, Delivery | None]] = []
        self._background: set[asyncio.Future[Any]] = set()

        self._schedulers: dict[BackoffPolicy, BackoffScheduler] = {}
        self._delay_sched = self._scheduler_for(config.backoff)
        self.breakers: dict[str, CircuitBreaker] = {}
        self._fail_fast: dict[str, bool] = {}
        self._types: dict[str, _TypeRuntime] = {}
        self._bind_new()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._accepting = True
        self._closing = False
        self._state = "new"
        self._stuck_since: dict[str, float] = {}
        self._stuck_reported: set[str] = set()
        low, high = config.worker_bounds
        self._min_workers = low
        self._max_workers = high
        self._target_workers = config.worker_count
        self._next_autoscale = 0.0
        self._next_health = 0.0
        self._latency_seen = (0.0, 0)

    # --- set-up -----------------------------------------------------------------------------

    def _scheduler_for(self, policy: BackoffPolicy) -> BackoffScheduler:
        sched = self._schedulers.get(policy)
        if sched is None:
            seed = self.config.seed
            sched = BackoffScheduler(
                base=policy.base,
                factor=policy.factor,
                max_delay=policy.max_delay,
                jitter=policy.jitter,
                seed=None if seed is None else seed + len(self._schedulers),
            )
            self._schedulers[policy] = sched
        return sched

    def _breaker_for(self, name: str) -> CircuitBreaker:
        breaker = self.breakers.get(name)
        if breaker is None:
            policy = self.registry.breakers.get(name) or BreakerPolicy()
            seed = self.config.seed
            breaker = CircuitBreaker(
                name=name,
                seed=None if seed is None else seed + 1000 + len(self.breakers),
                **policy.native_kwargs(),
            )
            self.breakers[name] = breaker
            self._fail_fast[name] = policy.fail_fast
        return breaker

    def _bind_new(self) -> None:
        """Binds the handlers registered since the last call (handlers may be added until start)."""
        for spec in self.registry:
            if spec.name in self._types:
                continue
            breaker = None if spec.breaker is None else self._breaker_for(spec.breaker)
            self._types[spec.name] = _TypeRuntime(
                spec,
                self.config,
                self._scheduler_for(spec.backoff or self.config.backoff),
                breaker,
                breaker is not None and self._fail_fast[breaker.name],
                self.metrics.for_type(spec.name),
                self._q,
                self.metrics.latency,
                self._pending,
                self._fresh,
                self._live,
                self._id_stream,
                has_cache=self.cache is not None,
            )

    @property
    def name(self) -> str:
        """The component name, "pool"."""
        return "pool"

    async def start(self) -> None:
        """Starts the workers (and the tick timer) on the running loop."""
        if self._state != "new":
            raise RuntimeError(f"pool cannot start: it is {self._state}")
        self._loop = asyncio.get_running_loop()
        self._bind_new()
        self._threads = ThreadPoolExecutor(max_workers=self.config.thread_count, thread_name_prefix="hulk-sync")
        for _ in range(self._target_workers):
            self._spawn()
        if self.config.tick_interval is not None:
            self._ticker = self._loop.create_task(self._tick_loop(self.config.tick_interval), name="hulk-pool-tick")
        self._state = "started"
        now = self._now()
        self._next_autoscale = now + self.config.autoscale_interval
        self._next_health = now + 1.0
        if self._pending:
            self._arm_flush()
        if len(self._q):
            self._arm_wake()

    def ready(self) -> bool:
        """True while started and accepting tasks."""
        return self._state == "started" and self._accepting

    def _spawn(self) -> _Worker:
        assert self._loop is not None
        self._worker_numbers += 1
        worker = _Worker(self._worker_numbers)
        worker.aio = self._loop.create_task(self._work(worker), name=f"hulk-worker-{worker.number}")
        self._workers.append(worker)
        return worker

    # --- intake -----------------------------------------------------------------------------

    def submit(self, task: Task, delivery: Delivery | None = None, *, delay: float | None = None) -> Task:
        """Accepts a task: queued at once, or scheduled after `delay` seconds.

        The task's id, creation time and limits are filled in when unset. Call on the event loop.

        Args:
            task: a new task, or one handed back by a drain (status queued, scheduled or retrying).
            delivery: settles an externally delivered task (see `Delivery`); None for in-process.
            delay: seconds to wait before queueing (None or 0: queue now).

        Returns:
            `task`.

        Raises:
            QueueFull: the queue (or the delayed set) is full: retry later.
            UnknownTaskType: no handler for `task.type`.
            EngineStopped: the pool is draining or stopped.
            DuplicateTask: a live task has the same id.
            IllegalTransition: the task is running or terminal.
        """
        if not self._accepting:
            raise EngineStopped("the worker pool is draining or stopped; submit refused")
        rt = self._types.get(task.type)
        if rt is None:
            self._bind_new()
            rt = self._types.get(task.type)
            if rt is None:
                raise UnknownTaskType(task.type)
        previous = task.status
        if previous is not None and previous not in _SUBMITTABLE:
            raise IllegalTransition(task.id, previous, QUEUED)
        now = self._now()
        wall = now + self._wall
        if task.id:
            if task.id in self._index():
                raise DuplicateTask(task.id)
        else:
            task.id = self._next_id(wall)
        if not task.created_at:
            task.created_at = wall
        if task.max_retries is None:
            task.max_retries = rt.retries
        if task.timeout is None:
            task.timeout = rt.timeout
        task._rt = rt
        task._delivery = delivery
        if delay:
            if len(self._delay_sched) >= self.config.max_scheduled:
                raise _queue_full(self.config.max_scheduled)
            self._hold(task, self._delay_sched, now + delay, wall)
            rt.metrics.submitted.inc()
        else:
            if self._parked_count and len(self._q) + self._parked_count >= self._capacity:
                self.metrics.rejected.inc()
                raise _queue_full(self._capacity)
            if not rt.ledger.push(task):
                self.metrics.rejected.inc()
                raise _queue_full(self._capacity)
            task.status = QUEUED
            task.queued_at = wall
            self._pending.append(task, previous, QUEUED, wall)
            if not self._flush_armed:
                self._arm_flush()
            if self._sleepers and not self._wake_armed:
                self._arm_wake()
        self._live[task.id] = task
        return task

    def submit_payload(
        self,
        type: str,
        payload: Any = None,
        *,
        delay: float | None = None,
        tenant: str = "default",
        idempotency_key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        trace: dict[str, str] | None = None,
    ) -> Task:
        """Checks the payload, creates the task and submits it: the hot path behind `Hulk.submit`.

        See `Hulk.submit` for the arguments and errors.
        """
        if idempotency_key is not None:
            known = self._idempotent.get((tenant, idempotency_key))
            if known is not None and not self._expired(known):
                return known
        if payload is not None and payload.__class__ not in _TRIVIAL_PAYLOADS:
            try:
                size = len(_dumps(payload))
            except TypeError as exc:
                raise PayloadError(f"payload of {type!r} is not JSON-serialisable: {exc}") from None
            if size > self._max_payload:
                raise PayloadError(f"payload of {type!r} is {size} bytes, more than the {self._max_payload} allowed")
        if not self._accepting:
            raise EngineStopped("the worker pool is draining or stopped; submit refused")
        rt = self._types.get(type)
        if rt is None:
            self._bind_new()
            rt = self._types.get(type)
            if rt is None:
                raise UnknownTaskType(type)
        if delay:
            task = Task(type, payload, tenant=tenant, idempotency_key=idempotency_key, priority=priority, trace=trace)
            task.max_retries = retries
            task.timeout = timeout
            self.submit(task, delay=delay)
        else:
            if self._parked_count and len(self._q) + self._parked_count >= self._capacity:
                self.metrics.rejected.inc()
                raise _queue_full(self._capacity)
            # The record is made, queued, counted and its event buffered in one native call,
            # which reads the system clock itself (None) unless the engine runs on another one.
            wall = None
            if self._clocked:
                now = self._now  # fetched, then called: the faster lookup
                wall = now() + self._wall
            made = rt.ledger.accept(payload, wall, tenant, idempotency_key, retries, timeout, priority, trace)
            if made is None:
                self.metrics.rejected.inc()
                raise _queue_full(self._capacity)
            task = made
            if not self._flush_armed:
                self._arm_flush()
            if self._sleepers and not self._wake_armed:
                self._arm_wake()
        if idempotency_key is not None:
            self._remember(task)
        return task

    def submit_many(
        self,
        type: str,
        payloads: Sequence[Any],
        *,
        tenant: str = "default",
        retries: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        trace: dict[str, str] | None = None,
    ) -> list[Task]:
        """Submits one task per payload in one call: one clock read, one native call.

        For producers that have several tasks at once (a batch HTTP request, a fetched batch of
        messages). Every payload is checked before any task is accepted. The tasks share one
        creation time.

        Returns:
            The accepted tasks: a prefix of `payloads`, shorter when the queue filled up (submit
            the rest later).

        Raises:
            QueueFull: the queue is full before the first task.
            PayloadError, UnknownTaskType, EngineStopped: as `Hulk.submit`; nothing is accepted.
        """
        if not payloads:
            return []
        limit = self._max_payload
        for payload in payloads:
            if payload is not None and payload.__class__ not in _TRIVIAL_PAYLOADS:
                try:
                    size = len(_dumps(payload))
                except TypeError as exc:
                    raise PayloadError(f"payload of {type!r} is not JSON-serialisable: {exc}") from None
                if size > limit:
                    raise PayloadError(f"payload of {type!r} is {size} bytes, more than the {limit} allowed")
        if not self._accepting:
            raise EngineStopped("the worker pool is draining or stopped; submit refused")
        rt = self._types.get(type)
        if rt is None:
            self._bind_new()
            rt = self._types.get(type)
            if rt is None:
                raise UnknownTaskType(type)
        room = self._capacity - len(self._q) - self._parked_count
        if room <= 0:
            self.metrics.rejected.inc()
            raise _queue_full(self._capacity)
        wall = self._now() + self._wall
        tasks: list[Task] = rt.ledger.accept_many(
            payloads[:room] if len(payloads) > room else payloads, wall, tenant, retries, timeout, priority, trace
        )
        if not tasks:
            self.metrics.rejected.inc()
            raise _queue_full(self._capacity)
        if not self._flush_armed:
            self._arm_flush()
        if self._sleepers and not self._wake_armed:
            self._arm_wake()
        return tasks

    def _expired(self, task: Task) -> bool:
        if task.status not in TERMINAL or task.finished_at is None:
            return False
        return task.finished_at + self.config.store_ttl <= self._now() + self._wall

    def _remember(self, task: Task) -> None:
        assert task.idempotency_key is not None
        self._idempotent[(task.tenant, task.idempotency_key)] = task
        while len(self._idempotent) > self.config.store_capacity:
            self._idempotent.popitem(last=False)

    async def wait_for_room(self) -> None:
        """Returns once the queue has room again (for producers that got QueueFull)."""
        if len(self._q) + self._parked_count < self._capacity:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._room_waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Woken, then cancelled before using the room: the next waiter gets the turn.
                self._wake_room()
            raise
        finally:
            # A waiter cancelled before its turn stays listed, done: its turn is skipped.
            if not fut.done():
                fut.cancel()

    def _wake_room(self, everyone: bool = False) -> None:
        """Wakes the producers waiting for room, first come first served, as many as there is room.

        Waking them all each time a worker takes a batch made every waiter retry, and all but a
        few meet a full queue again. Each pop that makes room wakes more, and an emptied queue
        wakes as many as it holds, so every waiter gets its turn while tasks are being taken.
        """
        waiters = self._room_waiters
        room = self._capacity - len(self._q) - self._parked_count
        while waiters and (everyone or room > 0):
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                room -= 1

    def free_slots(self) -> int:
        """Attempts that could start now without waiting: idle workers minus tasks already queued."""
        busy = sum(1 for w in self._workers if w.task is not None)
        return max(0, len(self._workers) - busy - len(self._q) - len(self._local) - self._parked_count)

    def running_deliveries(self) -> list[Delivery]:
        """Deliveries of the attempts running now (for periodic progress acks)."""
        out = []
        for w in self._workers:
            task = w.task
            if task is not None and task._delivery is not None:
                out.append(task._delivery)
        return out

    def get(self, task_id: str) -> Task | None:
        """The live (not yet terminal) record of `task_id` held by this pool, or None."""
        return self._index().get(task_id)

    def _index(self) -> dict[str, Task]:
        """The live index, with the unfinished tasks accepted since the last call filed in it.

        Call it before any read of `_live`, and before taking a task that has not ended out of
        it (a task still in `_fresh` would be filed again later).
        """
        fresh = self._fresh
        if fresh:
            live = self._live
            for task in tasks_not_in(fresh, _ENDED):
                live[task.id] = task
            fresh.clear()
        return self._live

    # --- events -----------------------------------------------------------------------------

    def _arm_flush(self) -> None:
        if self._loop is not None:
            self._flush_armed = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hands the buffered transitions to the store and the event sink now."""
        self._flush_armed = False
        if len(self._fresh) > self._fresh_limit:
            self._index()
        if not self._pending:
            return
        batch = self._pending.take()
        if self.store is not None:
            try:
                self.store.record(batch)
            except Exception:
                _log.exception("status_store_failed", events=len(batch))
        try:
            self.events.publish(batch)
        except Exception:
            _log.exception("event_sink_failed", events=len(batch))

    def _emit(self, task: Task, previous: TaskStatus | None, status: TaskStatus, wall: float) -> None:
        self._pending.append(task, previous, status, wall)
        if not self._flush_armed:
            self._arm_flush()

    # --- workers ----------------------------------------------------------------------------

    def _arm_wake(self) -> None:
        if self._loop is not None:
            self._wake_armed = True
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        """Wakes sleeping workers for the queued tasks: one per batch a worker takes at once.

        A worker that takes a batch and leaves tasks behind wakes one more (see `_work_loop`),
        so a burst of slow handlers still spreads over the workers, one more each loop turn,
        while a burst of quick ones no longer wakes a worker per task only to find the queue
        emptied by the first.
        """
        self._wake_armed = False
        want = -(-(len(self._q) + len(self._local)) // self._batch)
        sleepers = self._sleepers
        while want > 0 and sleepers:
            worker = sleepers.pop()
            fut = worker.sleeping
            worker.sleeping = None  # off the list: `_sleep` need not look for it there
            if fut is not None and not fut.done():
                fut.set_result(None)
            want -= 1

    def _new_turn(self) -> None:
        self._turn_armed = False
        self._turn_taken = 0

    def _wake_all(self) -> None:
        sleepers, self._sleepers = self._sleepers, []
        for worker in sleepers:
            fut = worker.sleeping
            worker.sleeping = None
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _sleep(self, worker: _Worker) -> None:
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        worker.sleeping = fut
        self._sleepers.append(worker)
        try:
            await fut
        finally:
            # A wake takes the worker off the list and clears `sleeping`; only a sleep ended
            # otherwise (cancelled, or retired by the scaler) is still listed. Looking for it in
            # the list every time cost a scan of all sleepers per task with hundreds of workers.
            if worker.sleeping is fut:
                worker.sleeping = None
                with contextlib.suppress(ValueError):
                    self._sleepers.remove(worker)

    async def _work(self, worker: _Worker) -> None:
        """One worker: takes tasks in batches and runs them, awaiting each handler inline."""
        if self.cache is not None:
            runtime_cache_var.set(self.cache)  # this worker's own context, for `hulk.context.cache()`
        try:
            await self._work_loop(worker)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug in the engine itself; keep the pool alive
            _log.exception("worker_crashed", worker=worker.number)
            if not self._closing and not worker.retire:
                self._spawn()
        finally:
            if worker in self._workers:
                self._workers.remove(worker)

    async def _work_loop(self, worker: _Worker) -> None:
        # The hot path. A batch taken from the queue goes to the native runner first, which runs
        # the plain attempts at its front start to finish (see `TaskRunner`); the rest of the
        # batch goes to `local`, where any worker takes tasks one by one. On this Python path,
        # everything touched per task is a local or one attribute away; one clock read per task;
        # the record, its events (appended to the native buffer), the breaker and the metrics are
        # kept by two native calls (`begin`, `succeed`); no lock, timer or log line. The watchdog
        # finds the deadline from `worker.task`.
        q = self._q
        local = self._local
        popleft = local.popleft
        run = self._runner.run
        take = self._runner.take
        pending = self._pending
        now_fn = self._now
        batch = self._batch
        queued_status = QUEUED
        scalars = _JSON_SCALARS
        set_task = _set_current_task
        now = now_fn()
        offset = self._wall
        took = False
        while True:
            if local:
                task = popleft()
                call = None
                if local and not self._wake_armed and self._sleepers:
                    # Tasks are still waiting here: wake one more worker, so a batch of slow
                    # handlers spreads over the workers (one more each loop turn).
                    self._arm_wake()
            else:
                if took or self._turn_taken >= self._turn_budget:
                    # Let the loop breathe (intake, timers, flushes) once per batch taken, and
                    # whenever this turn's budget is spent (the next turn, after the loop polls
                    # its sockets, starts a new one).
                    took = False
                    if not self._flush_armed and pending:
                        self._arm_flush()
                    await asyncio.sleep(0)
                    if worker.retire:
                        return
                    now = now_fn()
                    offset = self._wall
                    continue
                try:
                    items = q.pop_many(batch)
                except QueueClosed:
                    items = []
                if items:
                    self._turn_taken += len(items)
                    if not self._turn_armed:
                        self._turn_armed = True
                        self._loop.call_soon(self._new_turn)  # type: ignore[union-attr]
                else:
                    if worker.retire or self._closing:
                        return
                    if not self._flush_armed and pending:
                        self._arm_flush()
                    await self._sleep(worker)
                    now = now_fn()
                    offset = self._wall
                    continue
                if self._room_waiters:
                    self._wake_room()
                took = True
                try:
                    ran = run(items, offset)
                except BaseException:
                    # A delivery's settle raised past `_settle` (KeyboardInterrupt...): the
                    # tasks after the one settled go back to the others before this worker goes.
                    local.extend(items[self._runner.position() + 1 :])
                    if self._sleepers and not self._wake_armed:
                        self._arm_wake()
                    raise
                count = len(items)
                if worker.interrupt and (ran == count or worker.task is not items[ran]):
                    # A handler the runner called cancelled its own task, then returned before
                    # any await: its result stands (see `cancel`).
                    worker.task = None
                    await self._swallowed_cancel(worker)
                now = now_fn()
                if ran == count:
                    continue
                # The runner stopped at this task: not begun (None), or begun with its handler
                # called (the rest of the attempt, to await below).
                task = items[ran]
                call = take()
                if ran + 1 < count:
                    local.extend(items[ran + 1 :])
                    if self._sleepers and not self._wake_armed:
                        self._arm_wake()  # tasks are left for others: wake one more
            rt: _TypeRuntime = task._rt
            ledger = rt.ledger
            if call is None:
                if rt.limit:
                    if task.status is not queued_status:
                        continue  # cancelled while queued: already recorded
                    if rt.active >= rt.limit:
                        rt.parked.append(task)
                        self._parked_count += 1
                        continue
                    rt.active += 1
                # Status check, breaker, record (running, attempt, start time), event, start
                # count and submit-to-start histogram in one native call.
                started = ledger.begin(task, now, offset)
                if started <= 0:
                    if rt.limit:
                        self._release_slot(rt)
                    if started == 0:
                        set_task(None)  # no attempt: hooks and deliveries must not see the previous one
                        self._refused(task, rt, rt.breaker, now)  # type: ignore[arg-type]
                    continue  # -1: cancelled while queued, already recorded
                # Set before the call, so a sync handler's thread gets it in its copy of the
                # context. Never reset: the next attempt sets it again, and nothing else runs in
                # this worker's context (tasks a handler creates copy the context as it is during
                # the attempt). The runner sets it the same way for the attempts it begins.
                set_task(task)
            worker.task = task
            try:
                direct = rt.direct
                if call is not None:
                    result = await call
                elif started == 1 and direct is not None:
                    result = await direct(task.payload)
                elif started == 2 and _sampled(task.trace):  # type: ignore[arg-type]
                    # Submitted inside a recorded trace: the attempt is a span of it (untraced tasks,
                    # and tasks of traces the sampler dropped, pay nothing).
                    result = await self._traced(rt, task)
                else:
                    result = await self._attempt(rt, task)
                if result is not None and type(result) not in scalars:
                    _check_result(result)
            except asyncio.CancelledError:
                reason = worker.interrupt
                worker.task = None
                worker.interrupt = 0
                if not reason:
                    # Cancelled from outside the engine (loop shutdown): record, then obey.
                    self._ended(task, rt, now_fn(), _SHUTDOWN, None)
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                now = now_fn()
                self._ended(task, rt, now, reason, None)
            except Exception as exc:
                # A handler that turns the engine's cancellation into another error still ends
                # as the timeout or cancel it was.
                reason = worker.interrupt
                worker.task = None
                if reason:
                    await self._swallowed_cancel(worker)
                now = now_fn()
                self._ended(task, rt, now, reason, exc)
            else:
                now = now_fn()
                worker.task = None
                if worker.interrupt:
                    # The handler swallowed the cancellation and returned: its result stands.
                    await self._swallowed_cancel(worker)
                # Record (result, end time, succeeded), event, breaker evidence (none for a cached
                # result: the dependency was not called), success count, duration histogram and
                # live index in one native call; it tells whether a delivery waits to be settled.
                if ledger.succeed(task, result, now, offset):
                    _settle(task)
            if rt.limit:
                self._release_slot(rt)

    @staticmethod
    async def _swallowed_cancel(worker: _Worker) -> None:
        """Takes back the engine's cancellation of an attempt that ended without it landing.

        A cancel asked while the handler waited was delivered (and caught); one its handler asked
        for its own task before awaiting is still pending on the worker's asyncio task and would
        land at the worker's next await, in another task's attempt: it lands here instead.
        """
        worker.interrupt = 0
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()

    def _attempt(self, rt: _TypeRuntime, task: Task) -> Any:
        """An untraced attempt's awaitable, the way the handler's `mode` says."""
        mode = rt.mode
        if mode == 3:
            return self._through_cache(rt, task)
        return self._call(rt, task)

    async def _traced(self, rt: _TypeRuntime, task: Task) -> Any:
        """Runs one attempt inside an execution span, a child of the submitter's trace (`task.trace`).

        The span ends with the attempt; a failed or timed-out attempt records its error on it. The
        tracer is the global one, so the engine exports spans wherever the process set tracing up.
        """
        with _TRACER.start_as_current_span(
            f"execute {task.type}",
            context=_PROPAGATOR.extract(task.trace or {}, context=Context()),
            kind=SpanKind.CONSUMER,
            attributes={
                "hulk.task.id": task.id,
                "hulk.task.type": task.type,
                "hulk.task.attempt": task.attempt,
                "hulk.tenant": task.tenant,
            },
        ):
            mode = rt.mode
            if mode == 0:
                return await rt.fn(task.payload)
            if mode == 1:
                return await rt.fn(task.payload, task=task)
            if mode == 2:
                return await self._off_loop(rt, task)
            return await self._through_cache(rt, task)

    async def _through_cache(self, rt: _TypeRuntime, task: Task) -> Any:
        """A cacheable type's attempt: the tenant's cached result, or the handler's, then stored."""
        cache = self.cache
        assert cache is not None
        try:
            key = result_key(task.type, canonical_payload(task.payload))
            space = cache.namespace(task.tenant)
        except (TypeError, ValueError) as exc:
            # A payload orjson refuses (only possible through `submit_task`) or a tenant the cache
            # cannot name: the task still runs, uncached.
            _log.warning("result_cache_unusable", task_id=task.id, tenant=task.tenant, error=str(exc))
            return await self._call(rt, task)
        try:
            found = await space.get(key, _MISS)
        except Exception as exc:
            _log.warning("result_cache_get_failed", task_id=task.id, error=repr(exc))
            found = _MISS
        if found is not _MISS:
            task.cached = True
            rt.cache_hits_inc()
            return found
        result = await self._call(rt, task)
        _check_result(result)
        try:
            await space.set(key, result, rt.cache_ttl)
        except Exception as exc:
            _log.warning("result_cache_set_failed", task_id=task.id, error=repr(exc))
        return result

    def _call(self, rt: _TypeRuntime, task: Task) -> Any:
        """The handler's awaitable, called the way its `call_mode` says."""
        mode = rt.call_mode
        if mode == 0:
            return rt.fn(task.payload)
        if mode == 1:
            return rt.fn(task.payload, task=task)
        return self._off_loop(rt, task)

    async def _off_loop(self, rt: _TypeRuntime, task: Task) -> Any:
        loop = self._loop
        assert loop is not None
        executor: _Executor | None
        if rt.kind == _THREAD:
            executor = self._threads
            ctx = contextvars.copy_context()
            fn = functools.partial(rt.fn, task=task) if rt.pass_task else rt.fn
            return await loop.run_in_executor(executor, ctx.run, fn, task.payload)
        executor = self._process_pool()
        return await loop.run_in_executor(executor, rt.fn, task.payload)

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._processes is None:
            # spawn: a forked child would inherit the loop, threads and native state mid-use.
            self._processes = ProcessPoolExecutor(
                max_workers=self.config.process_count, mp_context=multiprocessing.get_context("spawn")
            )
        return self._processes

    def _release_slot(self, rt: _TypeRuntime) -> None:
        rt.active -= 1
        if rt.parked and rt.active < rt.limit:
            self._local.appendleft(rt.parked.popleft())
            self._parked_count -= 1
            if self._sleepers and not self._wake_armed:
                self._arm_wake()

    def _ended(self, task: Task, rt: _TypeRuntime, now: float, reason: int, failure: BaseException | None) -> None:
        """Records an attempt that did not succeed: timeout, exception, cancel or shutdown."""
        wall = now + self._wall
        duration = wall - (task.started_at or wall)
        metrics = rt.metrics
        breaker = rt.breaker
        delivery = task._delivery
        if reason in (_CANCEL, _SHUTDOWN):
            if breaker is not None:
                breaker.release(now)
            if reason == _CANCEL:
                task.error = TaskError("TaskCancelled", f"cancelled while running attempt {task.attempt}")
                self._finish(task, RUNNING, CANCELLED, wall)
                metrics.cancelled.inc()
            else:
                task.error = TaskError("TaskInterrupted", f"attempt {task.attempt} interrupted by shutdown")
                task.status = RETRYING
                self._emit(task, RUNNING, RETRYING, wall)
                self._index().pop(task.id, None)
                self._interrupted.append((task, delivery))
            return
        if reason == _TIMEOUT:
            task.error = TaskError("TaskTimeout", f"attempt {task.attempt} exceeded its timeout of {task.timeout}s")
            metrics.timeouts.inc()
        else:
            assert failure is not None
            task.error = TaskError.from_exception(failure)
        metrics.failed.inc()
        metrics.duration.observe(duration)
        if breaker is not None:
            breaker.record_failure(duration, now)
        max_retries = rt.retries if task.max_retries is None else task.max_retries
        if task.attempt <= max_retries:
            task.status = RETRYING
            self._emit(task, RUNNING, RETRYING, wall)
            metrics.retried.inc()
            if delivery is not None:
                delay = rt.scheduler.delay(task.attempt)
                task.run_at = wall + delay
                self._index().pop(task.id, None)
                try:
                    delivery.on_retry(task, delay)
                except Exception:
                    _log.exception("delivery_on_retry_failed", task_id=task.id)
            else:
                due = rt.scheduler.schedule(task.id, task, task.attempt, now)
                task._sched = rt.scheduler
                task.run_at = due + self._wall
        else:
            self._dead(task, RUNNING, wall)

    def _finish(self, task: Task, previous: TaskStatus, status: TaskStatus, wall: float) -> None:
        task.status = status
        task.finished_at = wall
        self._emit(task, previous, status, wall)
        self._live.pop(task.id, None)
        if task._delivery is not None:
            _settle(task)

    def _dead(self, task: Task, previous: TaskStatus, wall: float) -> None:
        self._finish(task, previous, DEAD, wall)
        task._rt.metrics.dead.inc()
        for hook in self.on_dead:
            try:
                outcome = hook(task)
                if asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future):
                    fut = asyncio.ensure_future(outcome)
                    self._background.add(fut)
                    fut.add_done_callback(self._hook_done)
            except Exception:
                _log.exception("dead_letter_hook_failed", task_id=task.id)

    def _hook_done(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            _log.error("dead_letter_hook_failed", error=repr(fut.exception()))

    def _refused(self, task: Task, rt: _TypeRuntime, breaker: CircuitBreaker, now: float) -> None:
        """The breaker is open: hold the task until it half-opens, or fail it fast."""
        wall = now + self._wall
        if rt.fail_fast:
            task.error = TaskError("BreakerOpen", f"circuit breaker {breaker.name!r} is open")
            self._dead(task, QUEUED, wall)
            return
        delay = max(breaker.retry_after(now), self.config.breaker_recheck)
        if task._delivery is not None:
            task.status = SCHEDULED
            task.run_at = wall + delay
            self._emit(task, QUEUED, SCHEDULED, wall)
            self._index().pop(task.id, None)
            try:
                task._delivery.on_retry(task, delay)
            except Exception:
                _log.exception("delivery_on_retry_failed", task_id=task.id)
            return
        self._hold(task, self._delay_sched, now + delay, wall)

    def _hold(self, task: Task, sched: BackoffScheduler, due: float, wall: float) -> None:
        previous = task.status
        task.status = SCHEDULED
        task.run_at = due + self._wall
        sched.schedule_at(task.id, task, due)
        task._sched = sched
        self._emit(task, previous, SCHEDULED, wall)

    # --- cancellation -----------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Cancels a live task.

        A queued, delayed or retrying task turns `cancelled` at once. A running one is cancelled at
        its handler's current await (a sync handler's thread cannot be stopped: its result is
        discarded) and turns `cancelled` on the next event-loop turn.

        Returns:
            True when the task was live here and is (being) cancelled; False otherwise.
        """
        task = self._index().get(task_id)
        if task is None:
            return False
        status = task.status
        rt: _TypeRuntime = task._rt
        wall = self._now() + self._wall
        if status is RUNNING:
            native = self._runner.running() is task
            for worker in self._workers:
                # A task the native runner is running has no `worker.task`: it is its own
                # handler asking, before its first await, on its worker's asyncio task.
                if worker.aio is not None and (
                    worker.task is task or (native and worker.aio is asyncio.current_task())
                ):
                    if not worker.interrupt:
                        worker.task = task
                        worker.interrupt = _CANCEL
                        worker.aio.cancel()
                    return True
            return False  # pragma: no cover - a running task always has a worker
        if status in _HELD:
            if task._sched is not None:
                task._sched.cancel(task.id)
        elif status is QUEUED:
            try:
                rt.parked.remove(task)
            except ValueError:
                pass  # still in the queue: the worker skips it
            else:
                self._parked_count -= 1
        assert status is not None
        self._finish(task, status, CANCELLED, wall)
        rt.metrics.cancelled.inc()
        return True

    # --- the tick ---------------------------------------------------------------------------

    async def _tick_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
            except Exception:  # pragma: no cover - keep the timer alive whatever happens
                _log.exception("tick_failed")

    def tick(self, now: float | None = None) -> None:
        """Does the periodic work once: timeouts, due tasks, breaker health, auto-scaling, flush.

        Driven by the pool's own timer every `tick_interval`; tests with a fake clock call it.
        """
        if now is None:
            now = self._now()
        if type(self.clock) is SystemClock:
            self._wall = self.clock.wall_offset()
        offset = self._wall
        for worker in self._workers:
            task = worker.task
            if task is None or worker.interrupt or worker.aio is None:
                continue
            rt: _TypeRuntime = task._rt
            if now >= (task.started_at or 0.0) - offset + (task.timeout or rt.timeout):
                worker.interrupt = _TIMEOUT
                worker.aio.cancel()
        if self._accepting:
            self._release_due(now)
        if now >= self._next_health:
            self._next_health = now + 1.0
            self._check_breakers(now)
        if self._max_workers > self._min_workers and now >= self._next_autoscale and self._state == "started":
            self._next_autoscale = now + self.config.autoscale_interval
            self._autoscale()
        self.flush()

    def _release_due(self, now: float) -> None:
        room = self._capacity - len(self._q) - self._parked_count
        if room <= 0:
            return
        due: list[Task] = []
        for sched in self._schedulers.values():
            first = sched.next_due()
            if first is not None and first <= now:
                due.extend(sched.pop_due(now, room))
        if not due:
            return
        if len(due) > 1:
            due.sort(key=lambda task: task.run_at or 0.0)
        wall = now + self._wall
        for index, task in enumerate(due):
            if index >= room or not self._q.try_push(task):
                # No room left: back into the scheduler, due now, for the next tick.
                task._sched.schedule_at(task.id, task, now)
                continue
            previous = task.status
            task.status = QUEUED
            task.queued_at = wall
            task._sched = None
            self._emit(task, previous, QUEUED, wall)
        if self._sleepers and not self._wake_armed:
            self._arm_wake()

    def _check_breakers(self, now: float) -> None:
        for name, breaker in self.breakers.items():
            # metrics(now) rather than .state: the state read must use the engine's clock.
            if breaker.metrics(now)["state"] == "closed":
                self._stuck_since.pop(name, None)
                self._stuck_reported.discard(name)
                continue
            since = self._stuck_since.setdefault(name, now)
            if now - since >= self.config.breaker_stuck_after and name not in self._stuck_reported:
                self._stuck_reported.add(name)
                _log.warning("breaker_stuck_open", breaker=name, seconds=round(now - since, 1))

    def stuck_breakers(self) -> list[str]:
        """Names of breakers that stayed open longer than `breaker_stuck_after` (as last checked)."""
        return sorted(self._stuck_reported)

    def _autoscale(self) -> None:
        snap = self.metrics.latency.snapshot()
        seen_sum, seen_count = self._latency_seen
        self._latency_seen = (snap["sum"], snap["count"])
        started = snap["count"] - seen_count
        mean_latency = (snap["sum"] - seen_sum) / started if started else 0.0
        workers = [w for w in self._workers if not w.retire]
        count = len(workers)
        busy = sum(1 for w in workers if w.task is not None)
        depth = len(self._q) + len(self._local) + self._parked_count
        if count < self._max_workers and ((depth > 0 and busy >= count) or mean_latency > self.config.scale_up_latency):
            grow = min(max(1, count // 4), self._max_workers - count)
            for _ in range(grow):
                self._spawn()
            self.metrics.scale_ups.inc()
            self._target_workers = count + grow
            _log.info("pool_scaled_up", workers=count + grow, depth=depth, mean_latency=round(mean_latency, 4))
        elif count > self._min_workers and depth == 0 and busy * 2 < count:
            for worker in workers:
                if worker.sleeping is not None:
                    worker.retire = True
                    fut = worker.sleeping
                    if not fut.done():
                        fut.set_result(None)
                    self.metrics.scale_downs.inc()
                    self._target_workers = count - 1
                    _log.info("pool_scaled_down", workers=count - 1)
                    break

    # --- drain and stop ---------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> DrainResult:
        """Stops intake, hands back what has not started, lets running attempts finish.

        Args:
            timeout: seconds running attempts may take to finish (None: `drain_timeout`); those
                still running then are cancelled and handed back as interrupted.

        Returns:
            The tasks to requeue, so that nothing is lost.
        """
        if timeout is None:
            timeout = self.config.drain_timeout
        self._accepting = False
        self._closing = True
        items = list(self._local)
        self._local.clear()
        while True:
            chunk = self._q.pop_many(4096)
            if not chunk:
                break
            items.extend(chunk)
        self._q.close()
        for rt in self._types.values():
            items.extend(rt.parked)
            rt.parked.clear()
        self._parked_count = 0
        not_started: list[tuple[Task, Delivery | None]] = []
        live = self._index()
        for task in items:
            if task.status is QUEUED and live.pop(task.id, None) is not None:
                not_started.append((task, task._delivery))
        self._wake_all()
        self._wake_room(everyone=True)
        running = [w.aio for w in self._workers if w.aio is not None]
        finished_in_time = True
        if running:
            _done, late = await asyncio.wait(running, timeout=timeout)
            if late:
                finished_in_time = False
                for worker in list(self._workers):
                    if worker.task is not None and worker.aio is not None and not worker.interrupt:
                        worker.interrupt = _SHUTDOWN
                        worker.aio.cancel()
                await asyncio.wait(late)
        # Last, what waits for a due time: including retries scheduled by attempts that failed
        # while draining.
        for task in list(self._index().values()):
            if task.status in _HELD:
                if task._sched is not None:
                    task._sched.cancel(task.id)
                    task._sched = None
                del self._live[task.id]
                not_started.append((task, task._delivery))
        interrupted, self._interrupted = self._interrupted, []
        self.flush()
        return DrainResult(not_started, interrupted, finished_in_time)

    async def stop(self, timeout: float) -> DrainResult:
        """Drains within `timeout` seconds, then stops the timer and executors; returns the drain result."""
        result = await self.drain(timeout)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        for worker in list(self._workers):
            if worker.aio is not None:
                worker.aio.cancel()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
        self.flush()
        self._state = "stopped"
        return result

    # --- introspection ----------------------------------------------------------------------

    @property
    def worker_count(self) -> int:
        """Worker coroutines alive now."""
        return len(self._workers)

    @property
    def busy(self) -> int:
        """Attempts running now."""
        return sum(1 for w in self._workers if w.task is not None)

    @property
    def depth(self) -> int:
        """Tasks queued (native queue, taken batch and parked)."""
        return len(self._q) + len(self._local) + self._parked_count

    @property
    def scheduled(self) -> int:
        """Tasks waiting for a due time (delayed, breaker holds and retries)."""
        return sum(len(s) for s in self._schedulers.values())

    def idle(self) -> bool:
        """True when nothing is queued, running or buffered (scheduled tasks may still be waiting)."""
        return not self.depth and not self.busy and not self._pending

    def health(self) -> Health:
        """The pool's health: "ok" while running, "degraded" while a breaker is stuck open, "stopped" after a drain."""
        detail: dict[str, Any] = {
            "workers": self.worker_count,
            "busy": self.busy,
            "queued": self.depth,
            "capacity": self._capacity,
            "scheduled": self.scheduled,
            "accepting": self._accepting,
        }
        if self._state == "new":
            return Health("starting", detail)
        if self._state == "stopped" or not self._accepting:
            return Health("stopped", detail)
        stuck = self.stuck_breakers()
        if stuck:
            detail["stuck_breakers"] = stuck
            return Health("degraded", detail)
        return Health("ok", detail)

    def metrics_snapshot(self) -> dict[str, Any]:
        """Native counters and histograms plus gauges, as plain data for a metrics collector.

        Returns:
            {"latency", "rejected", "scale_ups", "scale_downs", "types": {type: counters},
            "workers", "workers_min", "workers_max", "busy", "queued", "capacity", "scheduled",
            "queue": native queue stats, "breakers": {name: native breaker metrics}}.
        """
        data = self.metrics.snapshot()
        data.update(
            workers=self.worker_count,
            workers_min=self._min_workers,
            workers_max=self._max_workers,
            busy=self.busy,
            queued=self.depth,
            capacity=self._capacity,
            scheduled=self.scheduled,
            queue=dict(self._q.stats()),
            breakers={name: dict(b.metrics()) for name, b in sorted(self.breakers.items())},
        )
        return data
