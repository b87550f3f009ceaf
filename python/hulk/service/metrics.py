"""Prometheus sources for the service: the engine's and the cache's native figures, read at scrape time."""

from __future__ import annotations

from typing import Any

from hulk.engine import Hulk
from hulk.observability.metrics import (
    Metrics,
    breaker_states,
    counter_family,
    gauge,
    gauge_family,
    histogram_family,
)

_OUTCOMES = ("submitted", "started", "succeeded", "failed", "retried", "dead", "cancelled", "timeouts", "cache_hits")


def register_engine(metrics: Metrics, engine: Hulk) -> None:
    """Exposes the engine's hot-path counters, duration histograms, queue and workers."""
    pool = engine.pool

    def tasks() -> dict[tuple[str, str], Any]:
        return {
            (name, outcome): getattr(tm, outcome)
            for name, tm in list(engine.metrics.types.items())
            for outcome in _OUTCOMES
        }

    metrics.add_source(counter_family("hulk_tasks_total", ("type", "status"), tasks))
    metrics.add_source(
        histogram_family(
            "hulk_task_duration_seconds",
            ("type",),
            lambda: {(name,): tm.duration for name, tm in list(engine.metrics.types.items())},
        )
    )
    metrics.add_source(
        histogram_family(
            "hulk_task_start_latency_seconds",
            (),
            lambda: {(): engine.metrics.latency},
            documentation="Seconds from submit to the start of an attempt.",
        )
    )
    metrics.add_source(gauge("hulk_queue_depth", lambda: float(pool.depth)))
    metrics.add_source(
        gauge_family(
            "hulk_workers",
            ("state",),
            lambda: {("busy",): float(pool.busy), ("idle",): float(pool.worker_count - pool.busy)},
        )
    )
    metrics.add_source(
        lambda: {
            "hulk_queue_rejected_total": float(engine.metrics.rejected.value),
            "hulk_workers_scale_ups_total": float(engine.metrics.scale_ups.value),
            "hulk_workers_scale_downs_total": float(engine.metrics.scale_downs.value),
        }
    )


def register_cache(metrics: Metrics, cache: Any) -> None:
    """Exposes cache requests by level and result, and per-level latency."""

    def requests() -> dict[tuple[str, str], float]:
        snap = cache.metrics.snapshot()["requests"]
        return {(level, result): float(n) for level, by in snap.items() for result, n in by.items()}

    metrics.add_source(counter_family("hulk_cache_requests_total", ("level", "result"), requests))
    metrics.add_source(
        histogram_family(
            "hulk_cache_latency_seconds",
            ("level",),
            lambda: {(level,): hist for level, hist in cache.metrics.latency.items()},
            documentation="Cache look-up latency by level (sampled on L1).",
        )
    )


def register_breakers(metrics: Metrics, engine: Hulk, cache: Any) -> None:
    """Exposes every breaker's state (0 closed, 1 half-open, 2 open)."""

    def all_breakers() -> list[Any]:
        found: list[Any] = list(engine.pool.breakers.values())
        if cache is not None:
            found.extend(cache.breakers())
        return found

    metrics.add_source(breaker_states(all_breakers))
