"""W3C trace context in message headers (until hulk.observability.tracing lands, the OTel API directly)."""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.context import Context

__all__ = ["extract", "inject"]


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Adds `traceparent` (and `tracestate`) of the current span to `headers`; returns `headers`."""
    propagate.inject(headers)
    return headers


def extract(headers: dict[str, str] | None) -> Context:
    """The trace context carried by `headers` (an empty context when there is none)."""
    return propagate.extract(headers or {})
