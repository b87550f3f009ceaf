"""hulk.observability.metrics: the registry, native counters read at scrape time, valid exposition."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import prometheus_client
import pytest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from hulk import __version__
from hulk._native import Counter, Histogram
from hulk.observability.metrics import (
    HULK_METRICS,
    Metrics,
    breaker_states,
    counter_family,
    gauge,
    gauge_family,
    histogram_family,
)


def families(metrics: Metrics) -> dict[str, Metric]:
    body, _ = metrics.render()
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = families(metrics)
    family = found[name] if name in found else found[name.removesuffix("_total")]  # counters drop _total
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


class Breaker:
    def __init__(self, name: str, state: str) -> None:
        self.name = name
        self.state = state


def full_registry() -> tuple[Metrics, dict[str, Any]]:
    """A registry with one source of every kind, as the service would wire it."""
    metrics = Metrics(instance="host-1-abcd")
    tasks = {("email", "succeeded"): Counter(), ("email", "failed"): Counter()}
    durations = {("email",): Histogram(buckets=[0.01, 0.1, 1.0])}
    http = {("GET", "/v1/tasks/{id}", "200"): Histogram(buckets=[0.005, 0.05])}
    cache = {"hits": 5, "misses": 2}
    metrics.add_source(counter_family("hulk_tasks_total", ("type", "status"), tasks))
    metrics.add_source(histogram_family("hulk_task_duration_seconds", ("type",), lambda: durations))
    metrics.add_source(gauge("hulk_queue_depth", lambda: 7))
    metrics.add_source(gauge_family("hulk_workers", ("state",), lambda: {("busy",): 3, ("idle",): 5}))
    metrics.add_source(breaker_states(lambda: [Breaker("payments", "open"), Breaker("smtp", "half_open")]))
    metrics.add_source(
        counter_family(
            "hulk_cache_requests_total",
            ("level", "result"),
            lambda: {("l1", "hit"): cache["hits"], ("l1", "miss"): cache["misses"]},
        )
    )
    metrics.add_http_histograms(lambda: http)
    return metrics, {"tasks": tasks, "durations": durations, "http": http, "cache": cache}


def test_build_info_and_content_type() -> None:
    metrics = Metrics(instance="host-1-abcd")
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert samples(metrics, "hulk_build_info") == {(("instance", "host-1-abcd"), ("version", __version__)): 1.0}
    assert b"# HELP hulk_build_info" in body


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = Metrics(instance="i").render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_registry_is_not_the_global_one() -> None:
    first, second = Metrics(instance="a"), Metrics(instance="b")
    first.add_source(gauge("hulk_queue_depth", lambda: 1))
    assert "hulk_queue_depth" not in families(second)
    assert (
        prometheus_client.REGISTRY.get_sample_value("hulk_build_info", {"instance": "a", "version": __version__})
        is None
    )


def test_native_counters_are_read_at_scrape_time() -> None:
    metrics, parts = full_registry()
    assert samples(metrics, "hulk_tasks_total")[(("status", "succeeded"), ("type", "email"))] == 0.0
    parts["tasks"][("email", "succeeded")].inc(3)  # the hot path: no Prometheus call
    parts["tasks"][("email", "failed")].inc()
    parts["cache"]["hits"] = 9
    assert samples(metrics, "hulk_tasks_total") == {
        (("status", "succeeded"), ("type", "email")): 3.0,
        (("status", "failed"), ("type", "email")): 1.0,
    }
    assert samples(metrics, "hulk_cache_requests_total")[(("level", "l1"), ("result", "hit"))] == 9.0


def test_sources_given_as_callables_see_new_label_sets() -> None:
    metrics, parts = full_registry()
    parts["durations"][("sms",)] = Histogram(buckets=[0.01, 0.1, 1.0])
    parts["durations"][("sms",)].observe(0.2)
    family = families(metrics)["hulk_task_duration_seconds"]
    assert {s.labels["type"] for s in family.samples} == {"email", "sms"}


def test_native_histograms_become_cumulative_buckets() -> None:
    metrics, parts = full_registry()
    for value in (0.005, 0.05, 0.5, 5.0):
        parts["durations"][("email",)].observe(value)
    family = families(metrics)["hulk_task_duration_seconds"]
    by_name: dict[str, list[tuple[str, float]]] = {}
    for sample in family.samples:
        by_name.setdefault(sample.name, []).append((sample.labels.get("le", ""), sample.value))
    assert by_name["hulk_task_duration_seconds_bucket"] == [("0.01", 1.0), ("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert by_name["hulk_task_duration_seconds_count"] == [("", 4.0)]
    ((_, total),) = by_name["hulk_task_duration_seconds_sum"]
    assert total == pytest.approx(5.555)


def test_histogram_snapshots_are_accepted_as_dicts() -> None:
    metrics = Metrics(instance="i")
    snapshot = {"buckets": [1.0, float("inf")], "counts": [1, 2, 2], "sum": 3.0, "count": 2}
    metrics.add_source(histogram_family("hulk_event_loop_lag_seconds", (), {(): snapshot}))
    family = families(metrics)["hulk_event_loop_lag_seconds"]
    assert [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")] == ["1.0", "+Inf", "+Inf"]


def test_gauges_and_breaker_states() -> None:
    metrics, _ = full_registry()
    assert samples(metrics, "hulk_queue_depth") == {(): 7.0}
    assert samples(metrics, "hulk_workers") == {(("state", "busy"),): 3.0, (("state", "idle"),): 5.0}
    assert samples(metrics, "hulk_breaker_state") == {(("name", "payments"),): 2.0, (("name", "smtp"),): 1.0}


def test_http_durations_come_from_the_http_layers_histograms() -> None:
    metrics, parts = full_registry()
    parts["http"][("GET", "/v1/tasks/{id}", "200")].observe(0.01)
    family = families(metrics)["hulk_http_request_duration_seconds"]
    (count,) = [s for s in family.samples if s.name.endswith("_count")]
    assert count.labels == {"method": "GET", "route": "/v1/tasks/{id}", "status": "200"}
    assert count.value == 1.0


def test_a_plain_callable_or_collector_is_a_source() -> None:
    class Custom:
        def collect(self) -> Iterable[Metric]:
            yield GaugeMetricFamily("hulk_custom", "A custom figure.", value=4)

    def plain() -> Iterable[Metric]:
        yield GaugeMetricFamily("hulk_plain", "A plain figure.", value=5)

    metrics = Metrics(instance="i")
    custom = Custom()
    metrics.add_source(custom)
    metrics.add_source(plain)
    assert samples(metrics, "hulk_custom") == {(): 4.0}
    assert samples(metrics, "hulk_plain") == {(): 5.0}
    metrics.remove_source(custom)
    metrics.remove_source(custom)  # absent: no error
    assert "hulk_custom" not in families(metrics)


def test_a_callable_returning_a_dict_is_a_source() -> None:
    metrics = Metrics(instance="i")
    queue = [1, 2, 3]
    retried = Counter()
    metrics.add_source(lambda: {"hulk_queue_depth": len(queue), "hulk_retries_total": retried.value})
    retried.inc(4)
    queue.append(4)
    assert samples(metrics, "hulk_queue_depth") == {(): 4.0}
    assert samples(metrics, "hulk_retries_total") == {(): 4.0}
    assert families(metrics)["hulk_retries"].type == "counter"


def test_a_failing_source_is_skipped_and_reported_once(output: io.BytesIO) -> None:
    metrics = Metrics(instance="i")
    broken = [True]

    def depth() -> float:
        if broken[0]:
            raise RuntimeError("queue gone")
        return 1.0

    metrics.add_source(gauge("hulk_queue_depth", depth))
    metrics.add_source(gauge_family("hulk_workers", ("state",), lambda: {("busy", "extra"): 1}))  # wrong labels
    for _ in range(3):
        assert "hulk_build_info" in families(metrics)
    broken[0] = False
    assert samples(metrics, "hulk_queue_depth") == {(): 1.0}
    events = [(r["event"], r["source"]) for r in (orjson.loads(x) for x in output.getvalue().splitlines())]
    assert events == [
        ("metrics.source_failed", "<metric source hulk_queue_depth>"),
        ("metrics.source_failed", "<metric source hulk_workers>"),
        ("metrics.source_recovered", "<metric source hulk_queue_depth>"),
    ]


def test_bad_histogram_snapshot_is_a_failing_source() -> None:
    metrics = Metrics(instance="i")
    snapshot = {"buckets": [1.0], "counts": [1], "sum": 1.0, "count": 1}
    metrics.add_source(histogram_family("hulk_task_duration_seconds", (), {(): snapshot}))
    assert "hulk_task_duration_seconds" not in families(metrics)


def test_names_outside_the_catalogue_need_documentation() -> None:
    with pytest.raises(ValueError, match="documentation"):
        gauge("hulk_unknown", lambda: 1.0)
    assert gauge("hulk_unknown", lambda: 1.0, documentation="Known now.") is not None


def test_catalogue_follows_prometheus_conventions() -> None:
    for name, (kind, labels, help_text) in HULK_METRICS.items():
        assert name.startswith("hulk_")
        assert (kind == "counter") == name.endswith("_total")
        if kind == "histogram":
            assert name.endswith("_seconds")
        assert help_text.endswith(".")
        assert "le" not in labels


# --- the exposition is valid ---------------------------------------------------------------------------


def test_exposition_parses_with_the_reference_parser() -> None:
    metrics, _ = full_registry()
    body, _ = metrics.render()
    parsed = {family.name: family.type for family in text_string_to_metric_families(body.decode())}
    expected = {
        "hulk_build_info": "gauge",
        "hulk_tasks": "counter",
        "hulk_task_duration_seconds": "histogram",
        "hulk_queue_depth": "gauge",
        "hulk_workers": "gauge",
        "hulk_breaker_state": "gauge",
        "hulk_cache_requests": "counter",
        "hulk_http_request_duration_seconds": "histogram",
    }
    assert parsed == expected


def promtool() -> str:
    """promtool from PATH or beside this interpreter (`make services` puts it in the venv)."""
    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("promtool not found: `make services` extracts it from Debian's prometheus package")
    return found


def test_exposition_passes_promtool() -> None:
    metrics, parts = full_registry()
    parts["tasks"][("email", "succeeded")].inc(2)
    parts["durations"][("email",)].observe(0.3)
    body, _ = metrics.render()
    result = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
