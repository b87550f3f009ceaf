"""hulk.observability.tracing: provider set-up, sampling, traceparent, a collector that is down."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind
from tests.unit.observability.conftest import lines

from hulk import __version__
from hulk.config import TelemetrySettings, load_settings
from hulk.observability import tracing
from hulk.observability.tracing import (
    GuardedExporter,
    extract,
    get_tracer,
    http_span_starter,
    inject,
    setup_tracing,
)


def telemetry(**env: str) -> TelemetrySettings:
    # Record every new trace unless a test says otherwise (the default records one in ten).
    env.setdefault("tracing__sample_ratio", "1")
    return load_settings(None, env={f"HULK_TELEMETRY__{k.upper()}": v for k, v in env.items()}).telemetry


@pytest.fixture
def memory() -> Iterator[tuple[tracing.Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    handle = setup_tracing(telemetry(service_name="orders"), instance_id="i-1", exporter=exporter, set_global=False)
    try:
        yield handle, exporter
    finally:
        handle.shutdown(timeout=1.0)


def test_spans_are_exported_with_the_service_resource(memory: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    handle, exporter = memory
    assert handle.enabled
    with handle.get_tracer("hulk.test").start_as_current_span("work", attributes={"task.type": "email"}):
        pass
    assert handle.force_flush(timeout=1.0)
    (span,) = exporter.get_finished_spans()
    assert span.name == "work"
    assert span.attributes is not None
    assert span.attributes["task.type"] == "email"
    attributes = span.resource.attributes
    assert attributes["service.name"] == "orders"
    assert attributes["service.version"] == __version__
    assert attributes["service.instance.id"] == "i-1"


def test_sampler_is_parent_based_ratio(memory: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    handle, _ = memory
    assert isinstance(handle.provider, TracerProvider)
    description = handle.provider.sampler.get_description()
    assert description.startswith("ParentBased{root:PreSampledRatio{1.0}")
    assert load_settings(None, env={}).telemetry.tracing.sample_ratio == 0.1


def test_a_sampled_parent_is_followed_even_at_ratio_zero() -> None:
    exporter = InMemorySpanExporter()
    handle = setup_tracing(telemetry(tracing__sample_ratio="0"), exporter=exporter, set_global=False)
    tracer = handle.get_tracer("hulk.test")
    with tracer.start_as_current_span("new root"):
        pass
    parent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with tracer.start_as_current_span("child", context=extract(parent)):
        pass
    assert handle.shutdown(timeout=1.0)
    assert [s.name for s in exporter.get_finished_spans()] == ["child"]


def test_traceparent_round_trip(memory: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    handle, exporter = memory
    tracer = handle.get_tracer("hulk.test")
    with tracer.start_as_current_span("publish") as publisher:
        headers = inject({"Nats-Msg-Id": "k1"})
    assert headers["Nats-Msg-Id"] == "k1"
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    context = publisher.get_span_context()
    assert (version, trace_id, span_id) == ("00", f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled

    with tracer.start_as_current_span("consume", context=extract(headers), kind=SpanKind.CONSUMER) as consumer:
        pass
    assert consumer.get_span_context().trace_id == context.trace_id
    handle.force_flush()
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["consume"].parent is not None
    assert finished["consume"].parent.span_id == context.span_id


def test_inject_without_a_span_writes_nothing() -> None:
    assert inject({}) == {}


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"traceparent": "garbage"}, {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"}],
)
def test_extract_without_a_valid_parent_gives_no_span(headers: dict[str, str] | None) -> None:
    assert not trace.get_current_span(extract(headers)).get_span_context().is_valid


def test_extract_ignores_header_case() -> None:
    context = extract({"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    span_context = trace.get_current_span(context).get_span_context()
    assert span_context.is_remote
    assert span_context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_unreachable_collector_costs_one_warning(output: io.BytesIO) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}/v1/traces"
    handle = setup_tracing(telemetry(tracing__endpoint=endpoint), set_global=False, export_timeout=0.5)
    tracer = handle.get_tracer("hulk.test")
    for _ in range(3):  # three batches: the first fails, the others fall in the cool-down
        with tracer.start_as_current_span("lost"):
            pass
        handle.force_flush(timeout=2.0)
    assert handle.exporter is not None
    assert handle.exporter.failing
    assert handle.exporter.dropped == 3
    handle.shutdown(timeout=1.0)
    records = lines(output)
    assert [r["event"] for r in records if r["level"] != "debug"] == ["tracing.export_failed"]
    (warning,) = records
    assert warning["level"] == "warning"
    assert warning["endpoint"] == endpoint
    assert warning["reason"]
    assert not any(r["logger"].startswith("opentelemetry") for r in records)


class _Flaky(SpanExporter):
    def __init__(self) -> None:
        self.results: list[SpanExportResult | Exception] = []
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        logging.getLogger(tracing.EXPORTER_LOGGERS[0]).error("Failed to export span batch code: 503")
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def shutdown(self) -> None:
        pass


def test_spans_ending_in_a_cooldown_are_not_queued(output: io.BytesIO) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from hulk.observability.tracing import OutageAwareSpanProcessor

    now = [100.0]
    inner = _Flaky()
    inner.results = [SpanExportResult.FAILURE, SpanExportResult.SUCCESS]
    guarded = GuardedExporter(inner, cooldown=30.0, clock=lambda: now[0])
    provider = TracerProvider()
    provider.add_span_processor(OutageAwareSpanProcessor(guarded, schedule_delay_millis=60_000))
    tracer = provider.get_tracer("t")
    tracer.start_span("first").end()
    assert provider.force_flush()  # the backend fails: the cool-down starts
    assert (inner.calls, guarded.dropped) == (1, 1)
    for _ in range(5):
        tracer.start_span("during the outage").end()  # dropped at once, never queued
    assert guarded.dropped == 6
    assert provider.force_flush()
    assert inner.calls == 1  # nothing was queued, so nothing was handed over
    now[0] += 30.0
    tracer.start_span("after").end()  # the cool-down is over: queued and exported again
    assert provider.force_flush()
    assert inner.calls == 2
    assert not guarded.failing
    provider.shutdown()


def test_guarded_exporter_waits_out_the_cooldown_then_recovers(output: io.BytesIO) -> None:
    now = [100.0]
    inner = _Flaky()
    inner.results = [SpanExportResult.FAILURE, RuntimeError("bug"), SpanExportResult.SUCCESS, SpanExportResult.FAILURE]
    guarded = GuardedExporter(inner, endpoint="http://collector", cooldown=30.0, clock=lambda: now[0])
    spans: list[ReadableSpan] = []

    assert guarded.export([*spans, *spans]) is SpanExportResult.FAILURE  # fails: one warning
    assert guarded.export(spans) is SpanExportResult.FAILURE  # in the cool-down: not even tried
    assert inner.calls == 1
    now[0] += 30.0
    assert guarded.export(spans) is SpanExportResult.FAILURE  # tried again, an exception: still failing
    assert inner.calls == 2
    now[0] += 30.0
    assert guarded.export(spans) is SpanExportResult.SUCCESS  # recovered: one info line
    assert not guarded.failing
    assert guarded.export(spans) is SpanExportResult.FAILURE  # a new outage: a new warning
    assert guarded.force_flush()
    guarded.shutdown()
    events = [(r["level"], r["event"]) for r in lines(output)]
    assert events == [
        ("warning", "tracing.export_failed"),
        ("info", "tracing.export_recovered"),
        ("warning", "tracing.export_failed"),
    ]
    assert lines(output)[0]["reason"] == "Failed to export span batch code: 503"


def test_exporter_loggers_are_silenced_only_while_the_exporter_lives(output: io.BytesIO) -> None:
    guarded = GuardedExporter(InMemorySpanExporter())
    exporter_logger = logging.getLogger(tracing.EXPORTER_LOGGERS[0])
    exporter_logger.error("silenced")
    guarded.shutdown()
    exporter_logger.error("heard")
    assert [r["event"] for r in lines(output)] == ["heard"]


def test_disabled_tracing_is_a_no_op() -> None:
    handle = setup_tracing(telemetry(tracing__enabled="false"), set_global=False)
    assert not handle.enabled
    assert handle.exporter is None
    with handle.get_tracer("hulk.test").start_as_current_span("nothing") as span:
        assert not span.is_recording()
    assert handle.force_flush()
    assert handle.shutdown()


def test_module_shutdown_flushes_the_last_setup() -> None:
    exporter = InMemorySpanExporter()
    handle = setup_tracing(telemetry(), exporter=exporter, set_global=False)
    with handle.get_tracer("hulk.test").start_as_current_span("last words"):
        pass
    assert tracing.shutdown(timeout=1.0)
    assert [s.name for s in exporter.get_finished_spans()] == ["last words"]
    assert tracing.shutdown(timeout=1.0)  # nothing left to shut down


def test_setup_installs_the_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[trace.TracerProvider] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    handle = setup_tracing(telemetry(), exporter=InMemorySpanExporter())
    try:
        assert installed == [handle.provider]
        assert get_tracer("hulk.test") is not None
    finally:
        handle.shutdown(timeout=1.0)


def test_http_span_starter_continues_the_callers_trace(memory: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    handle, exporter = memory
    start = http_span_starter(handle.get_tracer("hulk.http"))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/tasks",
        "headers": [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
    }
    started = start(scope)
    assert started is not None
    with started as span:
        span.set_attribute("http.response.status_code", 202)
    handle.force_flush()
    (finished,) = exporter.get_finished_spans()
    assert finished.kind is SpanKind.SERVER
    assert finished.name == "POST"
    assert finished.context is not None
    assert finished.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert finished.attributes is not None
    assert finished.attributes["url.path"] == "/v1/tasks"


def test_http_span_starter_samples_new_traces_before_building_a_span() -> None:
    # Ratio 0.5 in both the starter and the provider: every span the starter chose to start must be
    # recorded (the provider does not draw a second time), and the dropped requests get no span.
    exporter = InMemorySpanExporter()
    handle = setup_tracing(telemetry(tracing__sample_ratio="0.5"), exporter=exporter, set_global=False)
    try:
        start = http_span_starter(handle.get_tracer("hulk.http"), 0.5)
        scope = {"type": "http", "method": "GET", "path": "/v1/runtime", "headers": []}
        started = [start(scope) for _ in range(400)]
        kept = [cm for cm in started if cm is not None]
        assert 0 < len(kept) < 400
        for cm in kept:
            with cm as span:
                assert span.is_recording()
        handle.force_flush()
        assert len(exporter.get_finished_spans()) == len(kept)
    finally:
        handle.shutdown(timeout=1.0)


def test_http_span_starter_with_ratio_zero_still_follows_a_sampled_caller(
    memory: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    handle, _exporter = memory
    start = http_span_starter(handle.get_tracer("hulk.http"), 0.0)
    assert start({"type": "http", "method": "GET", "path": "/", "headers": []}) is None
    traced = start(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        }
    )
    assert traced is not None
    with traced as span:
        assert span.is_recording()


def test_pre_sampled_ratio_leaves_other_root_spans_to_the_trace_id_ratio() -> None:
    sampler = tracing.PreSampledRatio(0.0)
    assert "0.0" in sampler.get_description()
    dropped = sampler.should_sample(None, 0x0AF7651916CD43DD8448EB211C80319C, "user span")
    assert dropped.decision is Decision.DROP
    token = tracing._PRESAMPLED.set(True)
    try:
        kept = sampler.should_sample(None, 0x0AF7651916CD43DD8448EB211C80319C, "chosen span")
    finally:
        tracing._PRESAMPLED.reset(token)
    assert kept.decision is Decision.RECORD_AND_SAMPLE
