"""The platform middlewares, as one plain ASGI callable (no BaseHTTPMiddleware: it costs a task per request).

`PlatformMiddleware` does, outermost first: tracing (a SERVER span) → request context (id, timing,
metrics, access log) → error recovery (500 with the request id) → body size limit (413) → request
timeout (504) → the router. Health, readiness and metrics skip the timeout and tracing, so probes
stay cheap and never produce spans.

One class rather than one per concern because every layer costs a coroutine frame and a `send`
wrapper per request: with five layers that was a fifth of a submission's CPU in the service. The
timeout is one watchdog loop over the requests in flight (a deadline in a dict), not an
`asyncio.timeout` timer per request; it fires within a tenth of the timeout after the deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Callable
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
    """The id given to the request by `PlatformMiddleware` ("" outside it)."""
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


class _Exchange:
    """The `send` every layer shares: adds the request id header, remembers status and start."""

    __slots__ = ("rid_header", "send", "started", "status")

    def __init__(self, send: Send, rid_header: tuple[bytes, bytes]) -> None:
        self.send = send
        self.rid_header = rid_header
        self.started = False
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), self.rid_header]
        await self.send(message)


class _BodyTooLarge(Exception):
    pass


class _CountingReceive:
    """`receive` that raises `_BodyTooLarge` once more than `limit` body bytes arrived."""

    __slots__ = ("limit", "receive", "seen")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise _BodyTooLarge
        return message


class Deadlines:
    """The deadlines of the requests in flight, enforced by one watchdog task.

    `enter()` registers the current task; the watchdog cancels a task past its deadline and marks
    it expired, so the middleware can tell its own cancellation from any other. The watchdog runs
    only while requests are in flight.

    Args:
        timeout: seconds a request may take.
    """

    def __init__(self, timeout: float) -> None:
        if not timeout > 0 or math.isinf(timeout):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout
        self.tick = min(max(timeout / 10, 0.005), 1.0)
        self._live: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        """Starts the current task's deadline; returns the task (None outside a task)."""
        task = asyncio.current_task()
        if task is None:
            return None
        loop = task.get_loop()
        self._live[task] = loop.time() + self.timeout
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = loop.create_task(self._watch(), name="hulk-http-deadlines")
        return task

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Ends the task's deadline; True if it had expired (the cancellation was ours)."""
        self._live.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """True once the watchdog cancelled `task` for its deadline."""
        return task in self._expired

    def expire_due(self, now: float) -> int:
        """Cancels the tasks whose deadline is `now` or earlier; returns how many."""
        due = [task for task, deadline in self._live.items() if deadline <= now]
        for task in due:
            del self._live[task]
            self._expired.add(task)
            task.cancel()
        return len(due)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._live:
            await asyncio.sleep(self.tick)
            self.expire_due(loop.time())


SpanStarter = Callable[[Scope], Any]


class PlatformMiddleware:
    """Request id, access log, metrics, tracing, error recovery, body limit and timeout in one layer.

    Args:
        app: the router (or the next ASGI app).
        metrics: request durations per route and status.
        body_limit: largest request body in bytes (413 beyond, by header and while streaming).
        timeout: seconds a request may take (504 beyond); probes are exempt.
        start_span: `start_span(scope)` returns a context manager yielding the request's span (the
            observability layer builds it from the incoming `traceparent`), or None for no tracing.
        exempt: paths with no span and no timeout.

    The access log writes every request at debug level (dropped before any processing when the
    level is higher) and server errors at error level.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        body_limit: int,
        timeout: float,
        start_span: SpanStarter | None = None,
        exempt: frozenset[str] = PROBE_PATHS,
    ) -> None:
        if body_limit < 0:
            raise ValueError(f"body_limit must be >= 0 bytes, got {body_limit}")
        self.app = app
        self.metrics = metrics
        self.body_limit = body_limit
        self.deadlines = Deadlines(timeout)
        self.start_span = start_span
        self.exempt = exempt
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-{int(time.time()):x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        length: bytes | None = None
        # One pass over the headers for everything this layer reads.
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = rid or value.decode("latin-1")[:128]
            elif name == b"content-length":
                length = value
        if not rid:
            rid = f"{self._prefix}-{next(self._ids)}"
        scope["hulk.request_id"] = rid
        exchange = _Exchange(send, (b"x-request-id", rid.encode("latin-1")))
        exempt = scope["path"] in self.exempt
        start = time.perf_counter()
        # Outermost, so the span covers the access log line and error logs (they carry its trace and
        # span ids) and records the status of answers made here too (413, 504, 500).
        span_cm = None if exempt or self.start_span is None else self.start_span(scope)
        span = None if span_cm is None else span_cm.__enter__()
        failure: BaseException | None = None
        try:
            await self._guarded(scope, receive, exchange, rid, exempt, length)
        except BaseException as exc:  # only a cancellation from outside gets here
            failure = exc
            raise
        finally:
            elapsed = time.perf_counter() - start
            status = exchange.status
            template = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], template, status, elapsed)
            # A probe's 503 is an answer (not ready), not a server error: probes during an outage
            # would otherwise write an error line each.
            if status >= 500 and not exempt:
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
            if span_cm is not None and span is not None:
                span.set_attribute("http.response.status_code", status)
                if template != "unmatched":
                    span.set_attribute("http.route", template)
                if failure is None:
                    span_cm.__exit__(None, None, None)
                else:
                    span_cm.__exit__(type(failure), failure, failure.__traceback__)

    async def _guarded(
        self, scope: Scope, receive: Receive, exchange: _Exchange, rid: str, exempt: bool, length: bytes | None
    ) -> None:
        if scope["method"] not in _NO_BODY:
            if length is not None and length.isdigit() and int(length) > self.body_limit:
                await self._too_large(exchange, rid)
                return
            receive = _CountingReceive(receive, self.body_limit)
        task = None if exempt else self.deadlines.enter()
        try:
            await self.app(scope, receive, exchange)
        except _BodyTooLarge:
            if not exchange.started:
                await self._too_large(exchange, rid)
        except asyncio.CancelledError:
            # Only our own deadline is a 504; any other cancellation goes on.
            if task is None or not self.deadlines.expired(task):
                raise
            task.uncancel()
            if not exchange.started:
                message = f"request took longer than {self.deadlines.timeout}s"
                await _send_error(exchange, 504, "timeout", message, rid)
        except Exception:
            # A TimeoutError raised by the app (a NATS request, say) is the app's error: a 500.
            log.exception("http.unhandled_error", path=scope["path"], request_id=rid)
            if not exchange.started:
                await _send_error(exchange, 500, "internal_error", "internal server error", rid)
        finally:
            if task is not None and self.deadlines.leave(task) and task.cancelling():
                task.uncancel()  # the app swallowed our cancellation: leave the task as it was

    async def _too_large(self, send: Send, rid: str) -> None:
        message = f"request body larger than {self.body_limit} bytes"
        await _send_error(send, 413, "body_too_large", message, rid)


_NO_BODY = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
