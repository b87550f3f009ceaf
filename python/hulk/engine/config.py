"""The engine's settings: one frozen object, built once (a later `hulk.config` maps YAML onto it).

The engine reads no environment variable; everything it needs arrives here or as an explicit
constructor argument (clock, store, event sink).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BackoffPolicy", "BreakerPolicy", "EngineConfig", "resolve_count"]

JitterMode = Literal["none", "full", "equal", "decorrelated"]


def _check_seconds(name: str, value: float, *, positive: bool = False) -> None:
    bad = value != value or value in (float("inf"), float("-inf")) or value < 0 or (positive and value == 0)
    if bad:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def resolve_count(name: str, value: int | Literal["auto"], per_cpu: int, minimum: int = 1) -> int:
    """Turns a count that may be "auto" into an integer.

    Args:
        name: the setting's name, for the error message.
        value: an integer, or "auto" for `per_cpu` × the number of CPUs.
        per_cpu: the multiplier for "auto".
        minimum: the smallest allowed value.

    Raises:
        ValueError: neither "auto" nor an integer >= `minimum`.
    """
    if value == "auto":
        return max(minimum, (os.cpu_count() or 1) * per_cpu)
    if isinstance(value, str):
        raise ValueError(f"{name} must be 'auto' or an integer >= {minimum}, got {value!r}")
    _check_int(name, value, minimum)
    return value


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff with jitter between attempts (computed by the native `BackoffScheduler`).

    The delay before retry n (n >= 1) is min(max_delay, base × factor**(n-1)), then jittered.

    Args:
        base: the first delay in seconds.
        factor: growth per attempt.
        max_delay: cap in seconds.
        jitter: "none", "full", "equal" or "decorrelated" (see `hulk._native.BackoffScheduler`).
    """

    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: JitterMode = "full"

    def __post_init__(self) -> None:
        _check_seconds("BackoffPolicy.base", self.base)
        _check_seconds("BackoffPolicy.max_delay", self.max_delay)
        if not self.factor >= 1.0 or self.factor == float("inf"):
            raise ValueError(f"BackoffPolicy.factor must be a finite number >= 1, got {self.factor!r}")
        if self.jitter not in ("none", "full", "equal", "decorrelated"):
            raise ValueError(f"BackoffPolicy.jitter must be none, full, equal or decorrelated, got {self.jitter!r}")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Settings of a named circuit breaker (the native `CircuitBreaker`) and what to do while it is open.

    Args:
        failure_rate_threshold: percentage of failed calls that opens it.
        minimum_calls: calls in the window before rates count.
        window_size: calls in the count window.
        wait_open: seconds it stays open before half-opening.
        half_open_calls: probes allowed while half-open.
        slow_call_duration: seconds above which a call is slow.
        slow_call_rate_threshold: percentage of slow calls that opens it.
        failure_count_threshold: failures in the window that open it regardless of the rate.
        fail_fast: while open, fail tasks at once (status dead, error BreakerOpen) instead of
            re-scheduling them for when it half-opens.
    """

    failure_rate_threshold: float = 50.0
    minimum_calls: int = 20
    window_size: int = 100
    wait_open: float = 30.0
    half_open_calls: int = 5
    slow_call_duration: float = 60.0
    slow_call_rate_threshold: float = 100.0
    failure_count_threshold: int | None = None
    fail_fast: bool = False

    def __post_init__(self) -> None:
        _check_seconds("BreakerPolicy.wait_open", self.wait_open, positive=True)
        _check_seconds("BreakerPolicy.slow_call_duration", self.slow_call_duration)
        _check_int("BreakerPolicy.minimum_calls", self.minimum_calls, 1)
        _check_int("BreakerPolicy.window_size", self.window_size, 1)
        _check_int("BreakerPolicy.half_open_calls", self.half_open_calls, 1)

    def native_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `hulk._native.CircuitBreaker` (everything but `name` and `seed`)."""
        return {
            "failure_rate_threshold": self.failure_rate_threshold,
            "slow_call_rate_threshold": self.slow_call_rate_threshold,
            "slow_call_duration": self.slow_call_duration,
            "window_size": self.window_size,
            "minimum_calls": self.minimum_calls,
            "wait_open": self.wait_open,
            "half_open_calls": self.half_open_calls,
            "failure_count_threshold": self.failure_count_threshold,
        }


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings of the in-process engine (worker pool, retries, store, health loop).

    Args:
        workers: tasks running at once: an integer, or "auto" for CPU count × 2.
        min_workers: lower bound for auto-scaling (None: `workers`).
        max_workers: upper bound for auto-scaling (None: `workers`); scaling is on when the bounds differ.
        queue_size: capacity of the native queue; a full queue makes `submit` raise QueueFull.
        max_scheduled: most delayed (not yet due) tasks held at once; more raise QueueFull.
        timeout: default seconds one attempt may run.
        max_retries: default attempts after the first one.
        backoff: default backoff between attempts.
        sync_threads: threads running sync handlers: an integer or "auto" (CPU count + 4, at most 32).
        process_workers: processes running handlers declared `executor="process"` ("auto": CPU count).
        batch_size: tasks a worker takes from the native queue at once, and runs before yielding.
        max_payload_bytes: largest accepted payload, serialised.
        tick_interval: seconds between ticks of the engine's one timer (timeout watchdog, due
            retries, health); None runs no timer (tests drive `tick()` with a fake clock).
        breaker_recheck: seconds to hold a task back when its breaker is half-open and busy.
        breaker_stuck_after: seconds a breaker may stay open before the health loop reports it.
        autoscale_interval: seconds between auto-scaling decisions.
        scale_up_latency: mean submit-to-start seconds above which the pool grows.
        store_capacity: finished tasks the in-memory status store keeps. Kept tasks are live Python
            objects the garbage collector walks on every full collection (about 1 ms per thousand
            here), so a large bound costs tail latency; a cluster-wide store belongs in the
            messaging layer's KV.
        store_ttl: seconds it keeps a finished task.
        drain_timeout: default seconds a drain lets running tasks finish.
        handlers: handler modules to load by import path ("pkg.tasks" or "pkg.tasks:app").
        seed: seed of backoff jitter and breaker jitter (None: random); fix it for reproducible tests.
    """

    workers: int | Literal["auto"] = "auto"
    min_workers: int | None = None
    max_workers: int | None = None
    queue_size: int = 2000
    max_scheduled: int = 100_000
    timeout: float = 20.0
    max_retries: int = 3
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    sync_threads: int | Literal["auto"] = "auto"
    process_workers: int | Literal["auto"] = "auto"
    batch_size: int = 64
    max_payload_bytes: int = 1 << 20
    tick_interval: float | None = 0.01
    breaker_recheck: float = 0.1
    breaker_stuck_after: float = 60.0
    autoscale_interval: float = 1.0
    scale_up_latency: float = 0.05
    store_capacity: int = 10_000
    store_ttl: float = 3600.0
    drain_timeout: float = 30.0
    handlers: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        workers = resolve_count("EngineConfig.workers", self.workers, 2)
        low = workers if self.min_workers is None else self.min_workers
        high = workers if self.max_workers is None else self.max_workers
        _check_int("EngineConfig.min_workers", low, 1)
        _check_int("EngineConfig.max_workers", high, 1)
        if not low <= workers <= high:
            raise ValueError(
                f"EngineConfig needs min_workers <= workers <= max_workers, got {low} <= {workers} <= {high}"
            )
        resolve_count("EngineConfig.sync_threads", self.sync_threads, 1)
        resolve_count("EngineConfig.process_workers", self.process_workers, 1)
        for name in ("queue_size", "max_scheduled", "batch_size", "max_payload_bytes", "store_capacity"):
            _check_int(f"EngineConfig.{name}", getattr(self, name), 1)
        _check_int("EngineConfig.max_retries", self.max_retries, 0)
        if isinstance(self.handlers, str) or not all(isinstance(path, str) and path for path in self.handlers):
            raise ValueError(f"EngineConfig.handlers must be a sequence of import paths, got {self.handlers!r}")
        _check_seconds("EngineConfig.timeout", self.timeout, positive=True)
        if self.tick_interval is not None:
            _check_seconds("EngineConfig.tick_interval", self.tick_interval, positive=True)
        for name in ("breaker_recheck", "autoscale_interval"):
            _check_seconds(f"EngineConfig.{name}", getattr(self, name), positive=True)
        for name in ("breaker_stuck_after", "scale_up_latency", "store_ttl", "drain_timeout"):
            _check_seconds(f"EngineConfig.{name}", getattr(self, name))

    @property
    def worker_count(self) -> int:
        """`workers` resolved to an integer."""
        return resolve_count("EngineConfig.workers", self.workers, 2)

    @property
    def worker_bounds(self) -> tuple[int, int]:
        """(minimum, maximum) worker counts for auto-scaling."""
        workers = self.worker_count
        low = workers if self.min_workers is None else self.min_workers
        high = workers if self.max_workers is None else self.max_workers
        return low, high

    @property
    def thread_count(self) -> int:
        """`sync_threads` resolved to an integer."""
        if self.sync_threads == "auto":
            return min(32, (os.cpu_count() or 1) + 4)
        return resolve_count("EngineConfig.sync_threads", self.sync_threads, 1)

    @property
    def process_count(self) -> int:
        """`process_workers` resolved to an integer."""
        return resolve_count("EngineConfig.process_workers", self.process_workers, 1)
