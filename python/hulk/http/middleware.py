"""The platform middlewares, as plain ASGI callables (no BaseHTTPMiddleware: it costs a task per request).

Order, outermost first: tracing → request context (id, timing, metrics, access log) → error recovery →
body size limit → request timeout → the router. Health, readiness and metrics skip the timeout and
tracing, so probes stay cheap and never produce spans.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hulk._native import Histogram
from hulk.http.models import ErrorBody, ErrorDetail
from hulk.http.responses import _encoder

log = structlog.get_logger("hulk.http")

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


def request_id(scope: Scope) -> str:
    """The id given to the request by `RequestContextMiddleware` ("" outside it)."""
    rid: str = scope.get("hulk.request_id", "")
    return rid


async def _send_error(send: Send, status: int, code: str, message: str, rid: str) -> None:
    body = _encoder.encode(ErrorBody(error=ErrorDetail(code=code, message=message, request_id=rid)))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _ResponseWatch:
    """Wraps `send` and remembers whether the response has started (after which no error answer fits)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class HttpMetrics:
    """Request durations per (method, route, status) in native histograms, read at scrape time."""

    def __init__(self) -> None:
        self.histograms: dict[tuple[str, str, str], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Records one request."""
        key = (method, route, str(status))
        hist = self.histograms.get(key)
        if hist is None:
            hist = self.histograms[key] = Histogram(buckets=HTTP_BUCKETS)
        hist.observe(seconds)


class RequestContextMiddleware:
    """Gives each request an id, times it, records its metrics and writes the access log.

    These share one `send` wrapper because each extra wrapper costs about a microsecond per request.
    The access log writes every request at debug level (dropped before any processing when the level
    is higher) and server errors at error level.
    """

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-{int(time.time()):x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:128]
                break
        if not rid:
            rid = f"{self._prefix}-{next(self._ids)}"
        scope["hulk.request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.observe(scope["method"], template, status, elapsed)
            # A probe's 503 is an answer (not ready), not a server error: probes during an outage
            # would otherwise write an error line each.
            if status >= 500 and scope["path"] not in PROBE_PATHS:
                log.error("http.request", method=scope["method"], path=scope["path"], status=status, request_id=rid)
            else:
                log.debug(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    request_id=rid,
                )


class ErrorRecoveryMiddleware:
    """Answers 500 with the request id (never a stack trace) when anything below raises."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _ResponseWatch(send)
        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("http.unhandled_error", path=scope["path"], request_id=request_id(scope))
            if not watch.started:
                await _send_error(send, 500, "internal_error", "internal server error", request_id(scope))


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses bodies larger than `limit` bytes with 413, by header and while streaming."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    await self._refuse(scope, send)
                    return
                break
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        watch = _ResponseWatch(send)
        try:
            await self.app(scope, counting_receive, watch)
        except _BodyTooLarge:
            if not watch.started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.limit} bytes"
        await _send_error(send, 413, "body_too_large", message, request_id(scope))


class TimeoutMiddleware:
    """Answers 504 when a request takes longer than `timeout` seconds (probes are exempt)."""

    def __init__(self, app: ASGIApp, *, timeout: float, exempt: frozenset[str] = PROBE_PATHS) -> None:
        self.app = app
        self.timeout = timeout
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        watch = _ResponseWatch(send)
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await self.app(scope, receive, watch)
        except TimeoutError:
            # Only our own deadline is a 504: a TimeoutError raised by the app (a NATS request, say)
            # is the app's error and goes on to the error recovery.
            if not deadline.expired():
                raise
            if not watch.started:
                message = f"request took longer than {self.timeout}s"
                await _send_error(send, 504, "timeout", message, request_id(scope))


SpanStarter = Callable[[Scope], Any]


class TracingMiddleware:
    """Wraps each API request in a server span (probes are exempt).

    `start_span(scope)` returns a context manager yielding the span (the observability layer builds it
    from the incoming `traceparent`); the span gets the route and status when the response starts.
    """

    def __init__(self, app: ASGIApp, *, start_span: SpanStarter, exempt: frozenset[str] = PROBE_PATHS) -> None:
        self.app = app
        self.start_span = start_span
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        with self.start_span(scope) as span:

            async def traced_send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    route = scope.get("route")
                    if route is not None:
                        span.set_attribute("http.route", getattr(route, "path", ""))
                await send(message)

            await self.app(scope, receive, traced_send)
