"""OpenTelemetry traces: an SDK tracer provider exporting OTLP/HTTP, and W3C trace-context helpers.

`setup_tracing(settings.telemetry)` builds a `TracerProvider` with a `ParentBased(PreSampledRatio)`
sampler (the HTTP layer draws its sampling decision before it builds any span, so a request the
sampler drops costs one random draw and no OpenTelemetry call), a resource naming the service
(name, version, instance id), and a `BatchSpanProcessor` exporting over OTLP/HTTP (protobuf) to
`telemetry.tracing.endpoint` (Jaeger, the OpenTelemetry collector, Tempo, ... all take it on port
4318). Spans are exported by a background thread; the event loop only appends finished spans to a
bounded queue.

An unreachable collector costs one warning per outage, not a log line per batch: the exporter's own
loggers are silenced (their last message is kept for our warning), and after a failed export the
exporter drops batches for a cool-down without trying the network, then tries again. The first
success after an outage logs one info line with the number of spans dropped.

`inject(headers)` / `extract(headers)` carry the W3C `traceparent` (and `tracestate`) through a dict
of headers, e.g. NATS message headers, so a task's spans join the trace of the request that sent it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from hulk import __version__
from hulk.config import TelemetrySettings
from hulk.observability.logging import get_logger

__all__ = [
    "GuardedExporter",
    "OutageAwareSpanProcessor",
    "PreSampledRatio",
    "Tracing",
    "extract",
    "get_tracer",
    "http_span_starter",
    "inject",
    "setup_tracing",
    "shutdown",
]

_log = get_logger("hulk.observability.tracing")

# Loggers through which the OTLP/HTTP exporter reports each failed batch (one error or warning per
# batch and per retry); `GuardedExporter` silences them and reports once per outage instead.
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)

_PROPAGATOR = TraceContextTextMapPropagator()


class _CaseInsensitiveGetter(Getter[Mapping[str, str]]):
    """Reads headers whatever their case (NATS and HTTP libraries differ)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lowered = key.lower()
            value = next((v for k, v in carrier.items() if k.lower() == lowered), None)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _CaseInsensitiveGetter()

# Set while a root span that hulk already chose to sample is being started (see `PreSampledRatio`).
_PRESAMPLED: ContextVar[bool] = ContextVar("hulk_presampled", default=False)


class PreSampledRatio(Sampler):
    """The root sampler: a span hulk's own fast path chose is sampled, any other by trace-id ratio.

    An SDK span costs tens of microseconds of the event loop even when the sampler drops it (ids,
    span context, context attach and detach), so the HTTP layer draws the ratio itself before it
    builds anything and starts a span only for the requests it keeps. Those spans must then be
    recorded whatever their trace id, or the effective ratio would be the ratio squared; other root
    spans (a user's own) keep the plain `TraceIdRatioBased` decision.

    Args:
        ratio: the share of new traces recorded, in [0, 1].
    """

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._by_id = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """Samples a pre-sampled root span; asks `TraceIdRatioBased` for any other."""
        sampler = ALWAYS_ON if _PRESAMPLED.get() else self._by_id
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        """The sampler's name and ratio, as OpenTelemetry samplers describe themselves."""
        return f"PreSampledRatio{{{self.ratio}}}"


_EMPTY = Context()  # a request with no traceparent starts a new trace (not the ambient one)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> MutableMapping[str, str]:
    """Writes the current span's W3C `traceparent` (and `tracestate`) into `headers`.

    Args:
        headers: a mutable mapping, e.g. the headers of a NATS message about to be published.
        context: the context to propagate; default the current one. Nothing is written when it has
            no valid span.

    Returns:
        `headers`, for chaining.
    """
    _PROPAGATOR.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context:
    """Reads a W3C `traceparent` from `headers` into a context to start child spans in.

    Args:
        headers: received headers (any key case), or None.

    Returns:
        A context holding the remote parent span, or an empty context when there is none or it is
        malformed (the W3C propagator ignores bad values rather than raising).
    """
    return _PROPAGATOR.extract(headers or {}, getter=_GETTER, context=Context())


class _Silencer(logging.Filter):
    """Drops the exporter's own log records, remembering the first since `clear()` for our warning."""

    def __init__(self) -> None:
        super().__init__()
        self.first_message = ""

    def clear(self) -> None:
        """Forgets the remembered message (before each export)."""
        self.first_message = ""

    def filter(self, record: logging.LogRecord) -> bool:
        """Remembers the record's message if it is the first, and drops the record."""
        if not self.first_message:
            self.first_message = record.getMessage()
        return False


class GuardedExporter(SpanExporter):
    """Wraps a span exporter so that an unreachable backend costs one warning per outage.

    After a failed export, batches are dropped (counted in `dropped`) for `cooldown` seconds without
    calling the wrapped exporter; then the next batch tries again. A failure logs one warning when an
    outage starts; the first success after it logs one info line.

    Args:
        inner: the exporter doing the work (OTLP/HTTP in production, in-memory in tests).
        endpoint: shown in the log lines.
        cooldown: seconds to drop batches after a failure.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        inner: SpanExporter,
        *,
        endpoint: str = "",
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._resume_at = float("-inf")
        self._failing = False
        self._dropped = 0
        self._silencer = _Silencer()
        for name in EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(self._silencer)

    @property
    def dropped(self) -> int:
        """Spans dropped because the backend failed or was in its cool-down."""
        return self._dropped

    @property
    def failing(self) -> bool:
        """True from a failed export until the next successful one."""
        return self._failing

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Exports one batch, or drops it during a cool-down."""
        with self._lock:
            if self._clock() < self._resume_at:
                self._dropped += len(spans)
                return SpanExportResult.FAILURE
            self._silencer.clear()
            try:
                result = self._inner.export(spans)
                reason = self._silencer.first_message
            except Exception as exc:  # an exporter bug must not kill the batch thread
                result, reason = SpanExportResult.FAILURE, repr(exc)
            if result is SpanExportResult.SUCCESS:
                if self._failing:
                    _log.info("tracing.export_recovered", endpoint=self._endpoint, dropped_spans=self._dropped)
                    self._failing = False
                    self._dropped = 0
                return result
            self._dropped += len(spans)
            self._resume_at = self._clock() + self._cooldown
            if not self._failing:
                self._failing = True
                _log.warning(
                    "tracing.export_failed",
                    endpoint=self._endpoint,
                    reason=reason or "export failed",
                    detail=f"spans are dropped until the collector answers; retrying every {self._cooldown:g}s",
                )
            return result

    def cooling_down(self) -> bool:
        """True while batches are dropped after a failure (the backend is not tried until then)."""
        return self._clock() < self._resume_at

    def count_dropped(self, spans: int) -> None:
        """Counts spans dropped before they reached the exporter (see `OutageAwareSpanProcessor`)."""
        with self._lock:
            self._dropped += spans

    def shutdown(self) -> None:
        """Shuts the wrapped exporter down and stops silencing its loggers."""
        try:
            self._inner.shutdown()
        finally:
            for name in EXPORTER_LOGGERS:
                logging.getLogger(name).removeFilter(self._silencer)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flushes the wrapped exporter (some return None, meaning nothing to flush)."""
        return self._inner.force_flush(timeout_millis) is not False


class OutageAwareSpanProcessor(BatchSpanProcessor):
    """A `BatchSpanProcessor` that queues no span while its exporter cools down after a failure.

    The guarded exporter drops what it is handed during a cool-down, but the batch queue still
    filled to its bound between exports and held that many finished spans (megabytes, the memory
    a long run without a collector grew by). Spans ending during a cool-down are counted as
    dropped at once instead; when it is over, spans queue again and the next batch tries the
    backend.

    Args:
        exporter: the guarded exporter.
        **options: `BatchSpanProcessor`'s options (queue size, schedule delay, batch size, timeout).
    """

    def __init__(self, exporter: GuardedExporter, **options: Any) -> None:
        super().__init__(exporter, **options)
        self._guard = exporter

    def on_end(self, span: ReadableSpan) -> None:
        """Queues the finished span for export, unless the backend is in its cool-down."""
        if self._guard.cooling_down():
            self._guard.count_dropped(1)
            return
        super().on_end(span)


class Tracing:
    """The tracing set-up of a process: its provider, a tracer factory, flush and shutdown.

    Args:
        provider: an SDK provider, or a no-op one when tracing is disabled.
        exporter: the guarded exporter (None when disabled).
    """

    def __init__(self, provider: trace.TracerProvider, exporter: GuardedExporter | None = None) -> None:
        self.provider = provider
        self.exporter = exporter

    @property
    def enabled(self) -> bool:
        """True when spans are recorded and exported."""
        return isinstance(self.provider, TracerProvider)

    def get_tracer(self, name: str) -> trace.Tracer:
        """A tracer of this provider, named after the instrumented module."""
        return self.provider.get_tracer(name, __version__)

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Exports every finished span now; False if it did not finish within `timeout` seconds."""
        if isinstance(self.provider, TracerProvider):
            return self.provider.force_flush(int(timeout * 1000))
        return True

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flushes, then stops the export thread; the provider records nothing afterwards."""
        flushed = self.force_flush(timeout)
        if isinstance(self.provider, TracerProvider):
            self.provider.shutdown()
        return flushed


_CURRENT: dict[str, Tracing] = {}


def setup_tracing(
    settings: TelemetrySettings,
    *,
    instance_id: str | None = None,
    exporter: SpanExporter | None = None,
    set_global: bool = True,
    export_timeout: float = 5.0,
    cooldown: float = 30.0,
    schedule_delay: float = 2.0,
    max_queue_size: int = 2048,
) -> Tracing:
    """Builds the tracer provider from `settings.telemetry`; call once at start-up.

    Args:
        settings: `settings.telemetry` (service name, tracing.enabled/endpoint/sample_ratio).
        instance_id: `service.instance.id` of the resource; default a new UUID.
        exporter: the exporter to use instead of OTLP/HTTP (tests pass an in-memory one).
        set_global: also install it as OpenTelemetry's global provider (possible once per process).
        export_timeout: seconds one export may take, retries included, before the batch is dropped.
        cooldown: seconds batches are dropped after a failed export before the next try.
        schedule_delay: seconds between background exports.
        max_queue_size: finished spans buffered for export; beyond it new spans are dropped.

    Returns:
        The `Tracing` handle; `shutdown(timeout)` flushes it at exit.
    """
    tracing_settings = settings.tracing
    if not tracing_settings.enabled:
        handle = Tracing(trace.NoOpTracerProvider())
    else:
        resource = Resource(
            {
                "service.name": settings.service_name,
                "service.version": __version__,
                "service.instance.id": instance_id or str(uuid.uuid4()),
            }
        )
        provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(PreSampledRatio(tracing_settings.sample_ratio)),
        )
        inner = exporter or OTLPSpanExporter(endpoint=tracing_settings.endpoint, timeout=export_timeout)
        guarded = GuardedExporter(inner, endpoint=tracing_settings.endpoint, cooldown=cooldown)
        provider.add_span_processor(
            OutageAwareSpanProcessor(
                guarded,
                max_queue_size=max_queue_size,
                schedule_delay_millis=schedule_delay * 1000,
                max_export_batch_size=min(512, max_queue_size),
                export_timeout_millis=export_timeout * 1000,
            )
        )
        handle = Tracing(provider, guarded)
    if set_global:
        trace.set_tracer_provider(handle.provider)
    _CURRENT["tracing"] = handle
    return handle


def get_tracer(name: str) -> trace.Tracer:
    """A tracer from the global provider (a proxy until `setup_tracing` installs the real one)."""
    return trace.get_tracer(name, __version__)


def shutdown(timeout: float = 5.0) -> bool:
    """Flushes and shuts down the provider built by the last `setup_tracing`; True if all was flushed."""
    handle = _CURRENT.pop("tracing", None)
    return handle.shutdown(timeout) if handle is not None else True


class _ServerSpan:
    """One request's SERVER span, current while the request runs.

    A class, not `@contextmanager`: this runs per API request, and the generator machinery plus
    `start_as_current_span`'s wrapper were a measurable share of a submission's CPU.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None and isinstance(exc, Exception):
                self._span.record_exception(exc)
                self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self._span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


def http_span_starter(
    tracer: trace.Tracer, sample_ratio: float = 1.0
) -> Callable[[Mapping[str, Any]], AbstractContextManager[Span] | None]:
    """A `start_span(scope)` for the HTTP layer's tracing middleware.

    The span is a SERVER span named after the method, child of the request's `traceparent` if any
    (only the two trace-context headers are read from the request). A request without one starts a
    new trace for `sample_ratio` of requests; for the others `start` returns None and no span,
    context or id is made at all (a request that carries a `traceparent` follows its sampled flag).

    Args:
        tracer: the tracer of the HTTP layer.
        sample_ratio: the share of new traces recorded (`telemetry.tracing.sample_ratio`).
    """
    draw = random.random

    def start(scope: Mapping[str, Any]) -> AbstractContextManager[Span] | None:
        carrier: dict[str, str] | None = None
        for key, value in scope.get("headers", ()):
            if key == b"traceparent" or key == b"tracestate":
                if carrier is None:
                    carrier = {}
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        if carrier is None and draw() >= sample_ratio:
            return None
        method = str(scope.get("method", "HTTP"))
        token = _PRESAMPLED.set(carrier is None)
        try:
            span = tracer.start_span(
                method,
                context=extract(carrier) if carrier is not None else _EMPTY,
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
            )
        finally:
            _PRESAMPLED.reset(token)
        return _ServerSpan(span)

    return start
