"""The HTTP API of hulk: a thin Starlette app over a `TaskBackend`.

Routes validate with msgspec, answer JSON, and map hulk's errors to status codes in one table
(`hulk.http.errors`). Tenancy: with `tenant_tokens` configured, the bearer token decides the tenant;
without, the `X-Hulk-Tenant` header does (default `default`). Admin routes need `admin_token`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hulk.config import parse_duration
from hulk.errors import HulkError
from hulk.http.backend import TaskBackend
from hulk.http.errors import status_for
from hulk.http.middleware import HttpMetrics, PlatformMiddleware, SpanStarter, request_id
from hulk.http.models import BatchAccepted, BatchItem, LogLevel, SubmitBatch, SubmitTask, TaskAccepted
from hulk.http.openapi import openapi_document
from hulk.http.responses import JSONResponse, error_response

MetricsRenderer = Callable[[], tuple[bytes, str]]
MAX_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How the HTTP layer behaves; filled from `server.*` settings by the service bootstrap.

    Args:
        body_limit: largest accepted request body, in bytes.
        request_timeout: seconds before a request is answered 504.
        admin_token: bearer token of the admin routes ("" disables them).
        tenant_tokens: bearer token → tenant; empty means tenants come from `tenant_header`.
        tenant_header: header naming the tenant when no tokens are configured.
    """

    body_limit: int = 1 << 20
    request_timeout: float = 30.0
    admin_token: str = ""
    tenant_tokens: Mapping[str, str] = field(default_factory=dict)
    tenant_header: str = "x-hulk-tenant"


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _decode(request_body: bytes, model: type[Any]) -> Any:
    try:
        return msgspec.json.decode(request_body, type=model)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.tasks[0].type`": keep the path as the field name.
        text = str(exc)
        path = text.rsplit("at `", 1)[1].rstrip("`") if "at `" in text else None
        raise _HttpError(422, "invalid_field", text, field=path) from None
    except msgspec.DecodeError as exc:
        raise _HttpError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None


def _wait_param(request: Request) -> float | None:
    if not request.scope.get("query_string"):
        return None  # most submissions: skip building the query parameters
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise _HttpError(400, "invalid_query", f"wait: {exc}", field="wait") from None
    if seconds > MAX_WAIT:
        raise _HttpError(400, "invalid_query", f"wait: at most {MAX_WAIT:g}s, got {raw!r}", field="wait")
    return seconds


class Api:
    """The route handlers, bound to one backend and one set of options."""

    def __init__(self, backend: TaskBackend, options: HttpOptions, metrics: MetricsRenderer | None) -> None:
        self.backend = backend
        self.options = options
        self.render_metrics = metrics
        self._tokens = dict(options.tenant_tokens)

    # --- helpers -------------------------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        """The request's tenant, from its token (when tokens are configured) or its header."""
        if self._tokens:
            token = _bearer(request)
            if token is None:
                raise _HttpError(401, "unauthorized", "missing bearer token")
            for known, tenant in self._tokens.items():
                if hmac.compare_digest(known, token):
                    return tenant
            raise _HttpError(401, "unauthorized", "unknown bearer token")
        return request.headers.get(self.options.tenant_header, "default") or "default"

    def require_admin(self, request: Request) -> None:
        """Refuses the request unless it carries the admin token."""
        if not self.options.admin_token:
            raise _HttpError(403, "admin_disabled", "admin API disabled: set server.admin_token")
        token = _bearer(request)
        if token is None or not hmac.compare_digest(token, self.options.admin_token):
            raise _HttpError(401, "unauthorized", "admin routes need the admin bearer token")

    async def json_body(self, request: Request) -> bytes:
        """The body of a JSON request (415 for another content type)."""
        ctype = request.headers.get("content-type", "")
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            raise _HttpError(415, "unsupported_media_type", f"expected application/json, got {ctype!r}")
        return await request.body()

    # --- probes --------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Readiness: NATS connected, streams ready, pool running, not draining, loop not blocked."""
        ok, checks = self.backend.readiness()
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        """Prometheus exposition."""
        if self.render_metrics is None:
            raise _HttpError(404, "metrics_disabled", "metrics are disabled (telemetry.metrics.enabled)")
        body, ctype = self.render_metrics()
        return Response(body, media_type=ctype)

    # --- tasks ---------------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        """`POST /v1/tasks`: 202 with id and status; with `?wait=`, the finished task when in time."""
        tenant = self.tenant(request)
        wait = _wait_param(request)
        task = _decode(await self.json_body(request), SubmitTask)
        accepted = await self.backend.submit(task, tenant=tenant, traceparent=request.headers.get("traceparent"))
        if wait is not None:
            view = await self.backend.wait(str(accepted["id"]), tenant=tenant, timeout=wait)
            if view is not None:
                return JSONResponse(view, status_code=200 if _is_terminal(view) else 202)
        return JSONResponse(TaskAccepted(id=str(accepted["id"]), status=str(accepted["status"])), status_code=202)

    async def submit_batch(self, request: Request) -> Response:
        """`POST /v1/tasks/batch`: each task accepted or refused on its own, in order."""
        tenant = self.tenant(request)
        batch = _decode(await self.json_body(request), SubmitBatch)
        traceparent = request.headers.get("traceparent")
        items: list[BatchItem] = []
        for index, task in enumerate(batch.tasks):
            try:
                accepted = await self.backend.submit(task, tenant=tenant, traceparent=traceparent)
            except HulkError as exc:
                items.append(BatchItem(index=index, error=f"{type(exc).__name__}: {exc}"))
            else:
                items.append(BatchItem(index=index, id=str(accepted["id"]), status=str(accepted["status"])))
        return JSONResponse(BatchAccepted(items=items), status_code=202)

    async def get_task(self, request: Request) -> Response:
        """`GET /v1/tasks/{id}` (optionally `?wait=` for a terminal state)."""
        tenant = self.tenant(request)
        wait = _wait_param(request)
        task_id = request.path_params["task_id"]
        if wait is not None:
            view = await self.backend.wait(task_id, tenant=tenant, timeout=wait)
        else:
            view = await self.backend.get(task_id, tenant=tenant)
        if view is None:
            raise _HttpError(404, "task_not_found", f"no task {task_id!r}")
        return JSONResponse(view)

    async def cancel_task(self, request: Request) -> Response:
        """`DELETE /v1/tasks/{id}`: cancels the task."""
        tenant = self.tenant(request)
        task_id = request.path_params["task_id"]
        view = await self.backend.cancel(task_id, tenant=tenant)
        if view is None:
            raise _HttpError(404, "task_not_found", f"no task {task_id!r}")
        return JSONResponse(view)

    async def list_dead(self, request: Request) -> Response:
        """`GET /v1/tasks/dead`: dead tasks of the tenant (all tenants with the admin token)."""
        limit_raw = request.query_params.get("limit", "100")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            raise _HttpError(400, "invalid_query", f"limit: an integer in [1, 1000], got {limit_raw!r}", "limit")
        tenant = None if self._is_admin(request) else self.tenant(request)
        return JSONResponse({"tasks": await self.backend.list_dead(tenant=tenant, limit=int(limit_raw))})

    async def replay(self, request: Request) -> Response:
        """`POST /v1/tasks/{id}/replay`: submits a dead task again."""
        tenant = None if self._is_admin(request) else self.tenant(request)
        task_id = request.path_params["task_id"]
        accepted = await self.backend.replay(task_id, tenant=tenant)
        if accepted is None:
            raise _HttpError(404, "task_not_found", f"no dead task {task_id!r}")
        return JSONResponse(accepted, status_code=202)

    async def runtime(self, request: Request) -> Response:
        """`GET /v1/runtime`: instance, version, workers, queue, breakers, cache, uptime."""
        self.tenant(request)
        return JSONResponse(self.backend.runtime_info())

    # --- admin ---------------------------------------------------------------------------------

    def _is_admin(self, request: Request) -> bool:
        token = _bearer(request)
        return bool(self.options.admin_token and token and hmac.compare_digest(token, self.options.admin_token))

    async def breakers(self, request: Request) -> Response:
        """`GET /v1/admin/breakers`."""
        self.require_admin(request)
        return JSONResponse({"breakers": self.backend.breakers()})

    async def breaker_action(self, request: Request) -> Response:
        """`POST /v1/admin/breakers/{name}/reset` and `.../open`."""
        self.require_admin(request)
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("reset", "open"):
            raise _HttpError(404, "not_found", f"unknown breaker action {action!r}: use reset or open")
        done = self.backend.reset_breaker(name) if action == "reset" else self.backend.open_breaker(name)
        if not done:
            raise _HttpError(404, "breaker_not_found", f"no breaker named {name!r}")
        return JSONResponse({"name": name, "action": action})

    async def cache_stats(self, request: Request) -> Response:
        """`GET /v1/admin/cache`."""
        self.require_admin(request)
        return JSONResponse(await self.backend.cache_stats())

    async def cache_flush(self, request: Request) -> Response:
        """`POST /v1/admin/cache/flush` (`?tenant=` to flush one tenant)."""
        self.require_admin(request)
        try:
            removed = await self.backend.cache_flush(tenant=request.query_params.get("tenant"))
        except ValueError as exc:
            raise _HttpError(400, "invalid_query", f"tenant: {exc}", field="tenant") from None
        return JSONResponse({"flushed": removed})

    async def log_level(self, request: Request) -> Response:
        """`PUT /v1/admin/log-level` with `{"level": "debug"}`."""
        self.require_admin(request)
        body = _decode(await self.json_body(request), LogLevel)
        self.backend.set_log_level(body.level.lower())
        return JSONResponse({"level": body.level.lower()})

    async def drain(self, request: Request) -> Response:
        """`POST /v1/admin/drain`: readiness turns false and intake stops."""
        self.require_admin(request)
        await self.backend.drain()
        return JSONResponse({"draining": True}, status_code=202)

    async def openapi(self, request: Request) -> Response:
        """`GET /openapi.json`."""
        return JSONResponse(openapi_document())


def _is_terminal(view: Mapping[str, Any]) -> bool:
    return view.get("status") in ("succeeded", "dead", "cancelled")


def _guard(api: Api, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _HttpError as exc:
            return error_response(
                exc.status, exc.code, exc.message, request_id=request_id(request.scope), field=exc.field
            )
        except HulkError as exc:
            status, code, headers = status_for(exc)
            return error_response(status, code, str(exc), request_id=request_id(request.scope), headers=headers)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", f"no route {request.url.path}", request_id=request_id(request.scope))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    message = f"method {request.method} not allowed on {request.url.path}"
    return error_response(405, "method_not_allowed", message, request_id=request_id(request.scope))


class _StaticRoutes:
    """Sends a request for a route without path parameters straight to its endpoint.

    Starlette's router tries each route's regex in turn and wraps every endpoint call in two
    exception-handling layers and a few closures; for `POST /v1/tasks` that was a tenth of the
    service's CPU per submission. Routes here are looked up by (method, path) in one dict, and their
    endpoints (all wrapped by `_guard`, or unable to fail) answer errors themselves. Everything
    else (path parameters, 404, 405, HEAD) goes on to the router.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.table: dict[tuple[str, str], Route] = {}
        for route in routes:
            if isinstance(route, Route) and "{" not in route.path:
                for method in route.methods or ():
                    if method != "HEAD":
                        self.table[(method, route.path)] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers a static route here; hands anything else to the router."""
        route = self.table.get((scope.get("method", ""), scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        # What the router would have put in the scope (`route` names the metrics' route label).
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        response = await route.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


class _PlatformApp(Starlette):
    """Starlette without its outer `ServerErrorMiddleware`, with static routes dispatched by a dict.

    `PlatformMiddleware` already answers every error with a 500 carrying the request id, so
    Starlette's own error layer never answered anything and only cost a `send` wrapper per request.
    """

    def build_middleware_stack(self) -> ASGIApp:
        """Our middleware, then the static routes, then the exception handlers (404, 405) and the router."""
        handlers = {key: value for key, value in self.exception_handlers.items() if key not in (500, Exception)}
        app: ASGIApp = _StaticRoutes(ExceptionMiddleware(self.router, handlers=handlers, debug=self.debug), self.routes)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(
    backend: TaskBackend,
    options: HttpOptions | None = None,
    *,
    metrics: MetricsRenderer | None = None,
    http_metrics: HttpMetrics | None = None,
    start_span: SpanStarter | None = None,
) -> Starlette:
    """Builds the ASGI app.

    Args:
        backend: the runtime operations.
        options: body limit, timeout, tokens.
        metrics: renders the Prometheus exposition for `/metrics` (None: 404).
        http_metrics: where request durations go (a fresh one when None).
        start_span: opens a server span for a request (None: no tracing middleware).

    Returns:
        The Starlette application.
    """
    opts = options or HttpOptions()
    api = Api(backend, opts, metrics)

    def g(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        return _guard(api, handler)

    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/ready", g(api.ready), methods=["GET"]),
        Route("/metrics", g(api.metrics), methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/tasks", g(api.submit), methods=["POST"]),
        Route("/v1/tasks/batch", g(api.submit_batch), methods=["POST"]),
        Route("/v1/tasks/dead", g(api.list_dead), methods=["GET"]),
        Route("/v1/tasks/{task_id}", g(api.get_task), methods=["GET"]),
        Route("/v1/tasks/{task_id}", g(api.cancel_task), methods=["DELETE"]),
        Route("/v1/tasks/{task_id}/replay", g(api.replay), methods=["POST"]),
        Route("/v1/runtime", g(api.runtime), methods=["GET"]),
        Route("/v1/admin/breakers", g(api.breakers), methods=["GET"]),
        Route("/v1/admin/breakers/{name}/{action}", g(api.breaker_action), methods=["POST"]),
        Route("/v1/admin/cache", g(api.cache_stats), methods=["GET"]),
        Route("/v1/admin/cache/flush", g(api.cache_flush), methods=["POST"]),
        Route("/v1/admin/log-level", g(api.log_level), methods=["PUT"]),
        Route("/v1/admin/drain", g(api.drain), methods=["POST"]),
    ]
    middleware = [
        Middleware(
            PlatformMiddleware,
            metrics=http_metrics or HttpMetrics(),
            body_limit=opts.body_limit,
            timeout=opts.request_timeout,
            start_span=start_span,
        )
    ]
    app = _PlatformApp(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: _not_found, 405: _not_allowed},
    )
    app.state.api = api
    return app
