"""Prometheus metrics: hot-path figures read from native counters at scrape time.

The hot path never calls prometheus_client: the engine bumps `hulk._native.Counter`s and fills
`hulk._native.Histogram`s (atomics), and this module reads them only when `/metrics` is scraped,
through *sources* registered on `Metrics`. A source is anything with `collect() -> Iterable[Metric]`
(prometheus_client's collector protocol), a callable returning such an iterable, or a callable
returning a dict {metric name: number} (a counter when the name ends in `_total`, else a gauge, e.g.
`lambda: {"hulk_queue_depth": len(queue)}`). The adapters below build sources from native objects:

| adapter            | from                                                     | Prometheus type |
|--------------------|----------------------------------------------------------|-----------------|
| `counter_family`   | {label values: Counter or number}, or a callable giving one | counter      |
| `histogram_family` | {label values: Histogram or its snapshot()}, or a callable  | histogram    |
| `gauge`            | a callable returning a number                            | gauge           |
| `gauge_family`     | a callable returning {label values: number}              | gauge           |
| `breaker_states`   | a callable returning circuit breakers                    | gauge (0/1/2)   |

The metric names hulk uses are listed in `HULK_METRICS` (name, type, labels, help), so every layer
registers the same spelling. A registry of our own (not prometheus_client's global default) keeps
tests isolated and the output free of anything we did not register.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from hulk import __version__
from hulk.observability.logging import get_logger

__all__ = [
    "BREAKER_STATE_VALUES",
    "HULK_METRICS",
    "BreakerLike",
    "CounterLike",
    "HistogramLike",
    "MetricSource",
    "Metrics",
    "breaker_states",
    "counter_family",
    "gauge",
    "gauge_family",
    "histogram_family",
]

_log = get_logger("hulk.observability.metrics")

LabelValues = tuple[str, ...]

HULK_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "hulk_build_info": ("gauge", ("version", "instance"), "Build information; always 1."),
    "hulk_http_request_duration_seconds": (
        "histogram",
        ("method", "route", "status"),
        "Time to answer an HTTP request, by route template.",
    ),
    "hulk_tasks_total": ("counter", ("type", "status"), "Task attempts finished, by task type and outcome."),
    "hulk_task_duration_seconds": ("histogram", ("type",), "Time a handler ran, by task type."),
    "hulk_queue_depth": ("gauge", (), "Tasks waiting in the in-process queue."),
    "hulk_workers": ("gauge", ("state",), "Workers of the pool, by state (busy, idle)."),
    "hulk_breaker_state": ("gauge", ("name",), "Circuit breaker state: 0 closed, 1 half-open, 2 open."),
    "hulk_cache_requests_total": ("counter", ("level", "result"), "Cache look-ups, by level (l1, l2, l3) and result."),
    "hulk_event_loop_lag_seconds": ("histogram", (), "How late the event loop ran a periodic callback."),
    "hulk_event_loop_blocked": ("gauge", (), "1 while event-loop lag is above the threshold."),
}
"""Every metric name hulk exposes: name -> (type, label names, help)."""

BREAKER_STATE_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


@runtime_checkable
class MetricSource(Protocol):
    """Something read at scrape time: prometheus_client's collector protocol."""

    def collect(self) -> Iterable[Metric]:
        """Yields metric families with their current samples."""
        ...


@runtime_checkable
class CounterLike(Protocol):
    """A native counter (`hulk._native.Counter`)."""

    @property
    def value(self) -> int:
        """The current value."""
        ...


@runtime_checkable
class HistogramLike(Protocol):
    """A native histogram (`hulk._native.Histogram`)."""

    def snapshot(self) -> Any:
        """{"buckets": upper bounds, "counts": cumulative counts (+Inf last), "sum", "count"}."""
        ...


class BreakerLike(Protocol):
    """A circuit breaker (`hulk._native.CircuitBreaker`)."""

    @property
    def name(self) -> str:
        """The breaker's name."""
        ...

    @property
    def state(self) -> str:
        """The state: "closed", "open" or "half_open"."""
        ...


def _help(name: str, documentation: str | None) -> str:
    if documentation is not None:
        return documentation
    known = HULK_METRICS.get(name)
    if known is None:
        raise ValueError(f"documentation: required for {name!r}, which is not in HULK_METRICS")
    return known[2]


def _resolve(read: Mapping[Any, Any] | Callable[[], Mapping[Any, Any]]) -> Mapping[Any, Any]:
    return dict(read() if callable(read) else read)


def _labels(key: Any, labelnames: tuple[str, ...], name: str) -> list[str]:
    values = [str(v) for v in key] if isinstance(key, tuple) else [str(key)]
    if len(values) != len(labelnames):
        raise ValueError(f"{name}: label values {key!r} do not match label names {labelnames!r}")
    return values


class _FamilySource:
    """A source built by one of the adapters: a name, for error messages, and a collect function."""

    def __init__(self, name: str, collect: Callable[[], Metric]) -> None:
        self.name = name
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        """Reads the current values."""
        yield self._collect()

    def __repr__(self) -> str:
        return f"<metric source {self.name}>"


def counter_family(
    name: str,
    labelnames: Iterable[str],
    counters: Mapping[Any, CounterLike | float] | Callable[[], Mapping[Any, CounterLike | float]],
    *,
    documentation: str | None = None,
) -> MetricSource:
    """A counter family read from native counters (or plain numbers) at scrape time.

    Args:
        name: the metric name, ending in `_total` (e.g. "hulk_tasks_total").
        labelnames: label names, e.g. ("type", "status").
        counters: {label values tuple (or one value for one label): Counter or number}, or a
            callable returning it (so counters created after registration are included).
        documentation: the help text; default the one in `HULK_METRICS`.
    """
    names = tuple(labelnames)
    text = _help(name, documentation)

    def collect() -> Metric:
        family = CounterMetricFamily(name, text, labels=names)
        for key, counter in _resolve(counters).items():
            value = counter.value if isinstance(counter, CounterLike) else counter
            family.add_metric(_labels(key, names, name), float(value))
        return family

    return _FamilySource(name, collect)


def _bound(value: float) -> str:
    """A bucket bound as Prometheus writes it ("0.005", "1.0", "+Inf")."""
    number = float(value)
    if number == float("inf"):
        return "+Inf"
    return repr(number)


def _histogram_buckets(snapshot: Mapping[str, Any]) -> list[tuple[str, float]]:
    bounds = [_bound(b) for b in snapshot["buckets"]]
    counts = list(snapshot["counts"])
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"histogram snapshot: {len(counts)} counts for {len(bounds)} buckets (+Inf expected last)")
    return [*zip(bounds, (float(c) for c in counts[:-1]), strict=True), ("+Inf", float(counts[-1]))]


def histogram_family(
    name: str,
    labelnames: Iterable[str],
    histograms: Mapping[Any, HistogramLike | Mapping[str, Any]]
    | Callable[[], Mapping[Any, HistogramLike | Mapping[str, Any]]],
    *,
    documentation: str | None = None,
) -> MetricSource:
    """A histogram family read from native histograms' `snapshot()` at scrape time.

    Args:
        name: the metric name, with its unit (e.g. "hulk_task_duration_seconds").
        labelnames: label names ( () for none: then the key is ()).
        histograms: {label values: Histogram or a snapshot dict}, or a callable returning it.
        documentation: the help text; default the one in `HULK_METRICS`.
    """
    names = tuple(labelnames)
    text = _help(name, documentation)

    def collect() -> Metric:
        family = HistogramMetricFamily(name, text, labels=names)
        for key, histogram in _resolve(histograms).items():
            snapshot = histogram.snapshot() if isinstance(histogram, HistogramLike) else histogram
            family.add_metric(_labels(key, names, name), _histogram_buckets(snapshot), float(snapshot["sum"]))
        return family

    return _FamilySource(name, collect)


def gauge(name: str, read: Callable[[], float], *, documentation: str | None = None) -> MetricSource:
    """A gauge without labels whose value `read()` returns at scrape time (e.g. `len(queue)`)."""
    text = _help(name, documentation)

    def collect() -> Metric:
        return GaugeMetricFamily(name, text, value=float(read()))

    return _FamilySource(name, collect)


def gauge_family(
    name: str,
    labelnames: Iterable[str],
    read: Callable[[], Mapping[Any, float]],
    *,
    documentation: str | None = None,
) -> MetricSource:
    """A gauge family: `read()` returns {label values: number} at scrape time."""
    names = tuple(labelnames)
    text = _help(name, documentation)

    def collect() -> Metric:
        family = GaugeMetricFamily(name, text, labels=names)
        for key, value in _resolve(read).items():
            family.add_metric(_labels(key, names, name), float(value))
        return family

    return _FamilySource(name, collect)


def breaker_states(read: Callable[[], Iterable[BreakerLike]], *, name: str = "hulk_breaker_state") -> MetricSource:
    """`hulk_breaker_state{name}`: 0 closed, 1 half-open, 2 open, for each breaker `read()` returns."""
    return gauge_family(name, ("name",), lambda: {(b.name,): BREAKER_STATE_VALUES[b.state] for b in read()})


Source = MetricSource | Callable[[], Iterable[Metric] | Mapping[str, float]]


def _from_mapping(figures: Mapping[str, float]) -> Iterator[Metric]:
    """{metric name: number} -> one family per name: a counter when it ends in `_total`, else a gauge."""
    for name, value in figures.items():
        known = HULK_METRICS.get(name)
        text = known[2] if known is not None else f"{name} (hulk)."
        if name.endswith("_total"):
            yield CounterMetricFamily(name, text, value=float(value))
        else:
            yield GaugeMetricFamily(name, text, value=float(value))


class _Sources(Collector):
    """The one collector registered for all sources; a failing source is skipped, not fatal."""

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self._failing: set[int] = set()

    def collect(self) -> Iterable[Metric]:
        """Collects every source; logs once when one starts failing, once when it recovers."""
        for source in list(self.sources):
            try:
                produced = source.collect() if isinstance(source, MetricSource) else source()
                families = list(_from_mapping(produced) if isinstance(produced, Mapping) else produced)
            except Exception as exc:  # one broken source must not take /metrics down
                if id(source) not in self._failing:
                    self._failing.add(id(source))
                    _log.warning("metrics.source_failed", source=repr(source), error=repr(exc))
                continue
            if id(source) in self._failing:
                self._failing.discard(id(source))
                _log.info("metrics.source_recovered", source=repr(source))
            yield from families


class Metrics:
    """hulk's metrics registry: build info, the registered sources, and the text exposition.

    Args:
        instance: the `instance` label of `hulk_build_info` (the process's instance id).
        version: the `version` label; default hulk's version.
    """

    def __init__(self, *, instance: str, version: str = __version__) -> None:
        self.registry = CollectorRegistry()
        self._sources = _Sources()
        self.registry.register(self._sources)
        build_info = Gauge(
            "hulk_build_info",
            HULK_METRICS["hulk_build_info"][2],
            labelnames=("version", "instance"),
            registry=self.registry,
        )
        build_info.labels(version=version, instance=instance).set(1)

    def add_source(self, source: Source) -> None:
        """Registers a source, read at every scrape from now on."""
        self._sources.sources.append(source)

    def remove_source(self, source: Source) -> None:
        """Unregisters a source (no error if absent)."""
        if source in self._sources.sources:
            self._sources.sources.remove(source)

    def add_http_histograms(
        self, read: Callable[[], Mapping[tuple[str, str, str], HistogramLike | Mapping[str, Any]]]
    ) -> MetricSource:
        """Exposes `hulk_http_request_duration_seconds{method,route,status}` from native histograms.

        Args:
            read: returns {(method, route template, status): Histogram}, e.g. the HTTP layer's
                `lambda: http_metrics.histograms`.

        Returns:
            The source, for `remove_source`.
        """
        source = histogram_family("hulk_http_request_duration_seconds", ("method", "route", "status"), read)
        self.add_source(source)
        return source

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition of every metric, and its content type.

        Args:
            accept: the scraper's Accept header; OpenMetrics when it asks for it, else the
                Prometheus text format.

        Returns:
            (body, content type).
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
