"""Hot-path metrics of the engine: native counters and histograms, read in bulk at scrape time.

The pool bumps `hulk._native.Counter`s and fills `Histogram`s as tasks move (one native call each,
no lock, no Prometheus call); a collector of the observability layer reads `snapshot()` when
scraped. The engine imports no metrics library.
"""

from __future__ import annotations

from typing import Any

from hulk._native import Counter, Histogram

__all__ = ["DURATION_BUCKETS", "LATENCY_BUCKETS", "EngineMetrics", "TypeMetrics"]

LATENCY_BUCKETS = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
]
"""Upper bounds (seconds) of the submit-to-start histogram."""

DURATION_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
"""Upper bounds (seconds) of the per-type attempt duration histogram."""

_COUNTERS = ("submitted", "started", "succeeded", "failed", "retried", "dead", "cancelled", "timeouts", "cache_hits")


class TypeMetrics:
    """Counters and the duration histogram of one task type.

    Attributes:
        submitted: tasks accepted.
        started: attempts started.
        succeeded: tasks that succeeded.
        failed: attempts that failed (exceptions and timeouts).
        retried: retries scheduled.
        dead: tasks that exhausted their retries.
        cancelled: tasks cancelled.
        timeouts: attempts that timed out.
        cache_hits: tasks of a cacheable type that succeeded with a cached result (also counted in
            `succeeded`).
        duration: seconds per finished attempt.
    """

    __slots__ = (*_COUNTERS, "duration")

    def __init__(self) -> None:
        self.submitted = Counter()
        self.started = Counter()
        self.succeeded = Counter()
        self.failed = Counter()
        self.retried = Counter()
        self.dead = Counter()
        self.cancelled = Counter()
        self.timeouts = Counter()
        self.cache_hits = Counter()
        self.duration = Histogram(buckets=DURATION_BUCKETS)

    def snapshot(self) -> dict[str, Any]:
        """Every counter's value and the duration histogram."""
        data: dict[str, Any] = {name: getattr(self, name).value for name in _COUNTERS}
        data["duration"] = self.duration.snapshot()
        return data


class EngineMetrics:
    """All of the engine's native metrics.

    Attributes:
        latency: submit-to-start seconds, every type.
        rejected: submits refused because the queue was full.
        scale_ups: auto-scaling steps up.
        scale_downs: auto-scaling steps down.
        types: per-type metrics by task type.
    """

    def __init__(self) -> None:
        self.latency = Histogram(buckets=LATENCY_BUCKETS)
        self.rejected = Counter()
        self.scale_ups = Counter()
        self.scale_downs = Counter()
        self.types: dict[str, TypeMetrics] = {}

    def for_type(self, name: str) -> TypeMetrics:
        """The metrics of task type `name` (created on first use)."""
        metrics = self.types.get(name)
        if metrics is None:
            metrics = self.types[name] = TypeMetrics()
        return metrics

    def snapshot(self) -> dict[str, Any]:
        """Counters and histograms as plain data: {"latency", "rejected", "scale_ups", "scale_downs", "types"}."""
        return {
            "latency": self.latency.snapshot(),
            "rejected": self.rejected.value,
            "scale_ups": self.scale_ups.value,
            "scale_downs": self.scale_downs.value,
            "types": {name: metrics.snapshot() for name, metrics in sorted(self.types.items())},
        }
