"""A small typed client of hulk's HTTP API, shared by `thor` and `hulk-mcp`.

One `HulkClient` wraps one `httpx.AsyncClient`: base URL, bearer tokens, timeouts. Every error answer
(`{"error": {"code", "message", "request_id", "field"?}}`) becomes an `ApiError` with those fields as
attributes; a connection that cannot be made becomes `Unreachable`, a request that gets no answer in
time `RequestTimeout`. All three derive from `ClientError`, itself a `HulkError`.

Example:
    >>> async with HulkClient("http://127.0.0.1:8080", token="s3cret") as hulk:  # doctest: +SKIP
    ...     accepted = await hulk.submit("echo", {"hello": "world"}, wait=2.0)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from hulk.errors import HulkError

__all__ = [
    "DEFAULT_URL",
    "TERMINAL_STATES",
    "ApiError",
    "ClientError",
    "HulkClient",
    "RequestTimeout",
    "Unreachable",
    "instance_from_settings",
]

DEFAULT_URL = "http://127.0.0.1:8080"
"""Where an instance listens when nothing else says (`server.host`/`server.port` defaults)."""

TERMINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})
"""Task states after which nothing changes."""

MAX_WAIT = 60.0
"""The largest `?wait=` the API accepts, in seconds."""


class ClientError(HulkError):
    """Something went wrong talking to a hulk instance."""


class Unreachable(ClientError):
    """The instance cannot be reached: refused, unknown host, TLS failure, connection dropped.

    Attributes:
        url: the base URL that was tried.
        reason: what the transport said.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach hulk at {url}: {reason}")


class RequestTimeout(ClientError, TimeoutError):
    """The instance accepted the connection but did not answer within the timeout.

    Attributes:
        url: the URL requested.
        timeout: the timeout, in seconds.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        super().__init__(f"no answer from {url} within {timeout:g}s")


class ApiError(ClientError):
    """The instance answered with an error status.

    Attributes:
        status: the HTTP status code.
        code: the stable error code of the body (`task_not_found`, `queue_full`, ...).
        message: the body's message, for people.
        request_id: the request's id, to quote in a report.
        field: the offending field or query parameter, when the body names one.
        retry_after: seconds from `Retry-After` (429, 503), else None.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str = "",
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.field = field
        self.retry_after = retry_after
        super().__init__(f"{status} {code}: {message}")

    @property
    def needs_admin(self) -> bool:
        """True when the route refused for want of the admin token (401 or 403)."""
        return self.status in (401, 403)

    def to_dict(self) -> dict[str, Any]:
        """The error as the API shaped it, plus the status: handy for `--json` output."""
        body: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.request_id:
            body["request_id"] = self.request_id
        if self.field is not None:
            body["field"] = self.field
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


def instance_from_settings(settings: Any) -> tuple[str, str | None]:
    """The URL and admin token of the instance that `settings` (a `hulk.config.Settings`) describes.

    A wildcard bind address (`0.0.0.0`, `::`) is reached on loopback.
    """
    server = settings.server
    host = server.host if server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}", server.admin_token.get_secret_value() or None


def _api_error(response: httpx.Response) -> ApiError:
    retry_after: float | None = None
    raw_retry = response.headers.get("retry-after")
    if raw_retry is not None:
        try:
            retry_after = float(raw_retry)
        except ValueError:
            retry_after = None
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        return ApiError(
            response.status_code,
            str(detail.get("code", "error")),
            str(detail.get("message", "")),
            request_id=str(detail.get("request_id") or response.headers.get("x-request-id", "")),
            field=detail.get("field"),
            retry_after=retry_after,
        )
    text = response.text.strip()[:200] or response.reason_phrase
    return ApiError(
        response.status_code,
        "http_error",
        text,
        request_id=response.headers.get("x-request-id", ""),
        retry_after=retry_after,
    )


def _seconds(wait: float) -> str:
    if not math.isfinite(wait) or wait < 0 or wait > MAX_WAIT:
        raise ValueError(f"wait must be between 0 and {MAX_WAIT:g} seconds, got {wait!r}")
    return f"{round(wait * 1000)}ms"


class HulkClient:
    """An async client of one hulk instance's HTTP API.

    Args:
        url: the instance's base URL, e.g. `http://127.0.0.1:8080`.
        token: bearer token of the task routes (a tenant token, or the admin token).
        admin_token: bearer token of the admin routes; defaults to `token`.
        tenant: value of the tenant header, for instances without tenant tokens.
        timeout: seconds to connect and to wait for an answer (a `wait` adds to it).
        max_connections: connections kept open at once (raise it for many concurrent requests).
        transport: an httpx transport, for tests (`httpx.ASGITransport(app=...)`).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        admin_token: str | None = None,
        tenant: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if timeout <= 0 or not math.isfinite(timeout):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url.rstrip("/")
        self.token = token or None
        self.admin_token = admin_token or self.token
        self.tenant = tenant or None
        self.timeout = timeout
        headers = {"user-agent": "hulk-client", "accept": "application/json"}
        if self.tenant:
            headers["x-hulk-tenant"] = self.tenant
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, limits=limits, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    # --- transport -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        admin: bool = False,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        extra_time: float = 0.0,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        """Sends one request and returns the response when its status is 2xx (or listed in `ok`).

        Args:
            method: HTTP method.
            path: path under the base URL.
            admin: send the admin token rather than the task token.
            json: a body to send as JSON.
            params: query parameters.
            extra_time: seconds added to the read timeout (for `?wait=`).
            ok: other statuses to return instead of raising.

        Raises:
            Unreachable: no connection could be made, or it broke.
            RequestTimeout: no answer within the timeout.
            ApiError: any other status.
        """
        token = self.admin_token if admin else self.token
        headers = {"authorization": f"Bearer {token}"} if token else None
        timeout = httpx.Timeout(self.timeout, read=self.timeout + extra_time)
        try:
            response = await self._http.request(
                method, path, json=json, params=params, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise Unreachable(self.url, f"connection timed out after {self.timeout:g}s") from None
            raise RequestTimeout(f"{self.url}{path}", self.timeout + extra_time) from None
        except (httpx.TransportError, OSError) as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        if response.is_success or response.status_code in ok:
            return response
        raise _api_error(response)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    # --- probes --------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """`GET /health`: liveness."""
        result: dict[str, Any] = await self._json("GET", "/health")
        return result

    async def ready(self) -> dict[str, Any]:
        """`GET /ready`: `{"ready": bool, "checks": {...}}` (a 503 "not ready" is an answer, not an error)."""
        response = await self.request("GET", "/ready", ok=(503,))
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "ready" not in body:
            raise _api_error(response)
        return body

    async def metrics(self) -> str:
        """`GET /metrics`: the Prometheus exposition text."""
        return (await self.request("GET", "/metrics")).text

    async def runtime(self) -> dict[str, Any]:
        """`GET /v1/runtime`: instance, version, workers, queue, breakers, cache, uptime."""
        result: dict[str, Any] = await self._json("GET", "/v1/runtime")
        return result

    # --- tasks ---------------------------------------------------------------------------------

    async def submit(
        self,
        task_type: str,
        payload: Any = None,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        priority: int | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/tasks`: submits one task.

        Args:
            task_type: the registered task type.
            payload: any JSON value.
            wait: seconds (at most 60) to wait for a terminal state before answering.
            idempotency_key: a resubmission with the same key is the same task.
            delay: seconds before the task may run.
            timeout: seconds the handler may run.
            max_retries: retries after the first attempt.
            priority: 0 (default) to 9.

        Returns:
            `{"id", "status"}`, or the task's full view when it finished within `wait`.
        """
        body: dict[str, Any] = {"type": task_type, "payload": payload}
        optional = {
            "idempotency_key": idempotency_key,
            "delay": delay,
            "timeout": timeout,
            "max_retries": max_retries,
            "priority": priority,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        params = {"wait": _seconds(wait)} if wait is not None else None
        result: dict[str, Any] = await self._json("POST", "/v1/tasks", json=body, params=params, extra_time=wait or 0.0)
        return result

    async def submit_batch(self, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`POST /v1/tasks/batch`: one item per task, accepted (`id`, `status`) or refused (`error`)."""
        body = await self._json("POST", "/v1/tasks/batch", json={"tasks": list(tasks)})
        items: list[dict[str, Any]] = body["items"]
        return items

    async def get_task(self, task_id: str, *, wait: float | None = None) -> dict[str, Any]:
        """`GET /v1/tasks/{id}`, optionally waiting up to `wait` seconds for a terminal state."""
        params = {"wait": _seconds(wait)} if wait is not None else None
        result: dict[str, Any] = await self._json(
            "GET", f"/v1/tasks/{_segment(task_id)}", params=params, extra_time=wait or 0.0
        )
        return result

    async def follow(self, view: Mapping[str, Any], wait: float) -> dict[str, Any]:
        """Follows a task until it is terminal or `wait` seconds have passed; returns its latest view.

        Uses `?wait=` (at most 60 s a request), so waits longer than the API's limit work. A task just
        accepted may not be readable yet on the instance that answers (its status record is written
        asynchronously): a 404 is then retried, a little later each time, until the deadline.

        Args:
            view: the task as last seen (at least `id` and `status`), e.g. what `submit` returned.
            wait: seconds to wait at most.
        """
        current = dict(view)
        deadline = time.monotonic() + wait
        unseen = 0
        while current.get("status") not in TERMINAL_STATES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                current = await self.get_task(str(current["id"]), wait=min(remaining, MAX_WAIT))
            except ApiError as exc:
                if exc.status != 404 or time.monotonic() + 0.05 >= deadline:
                    raise
                unseen += 1
                await asyncio.sleep(min(0.05 * 2 ** min(unseen, 5), 1.0, max(0.0, deadline - time.monotonic())))
        return current

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        """`DELETE /v1/tasks/{id}`: cancels the task; returns its view."""
        result: dict[str, Any] = await self._json("DELETE", f"/v1/tasks/{_segment(task_id)}")
        return result

    async def list_dead(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """`GET /v1/tasks/dead`: dead tasks, newest first (every tenant's with the admin token)."""
        if not 1 <= limit <= 1000:
            raise ValueError(f"limit must be between 1 and 1000, got {limit!r}")
        body = await self._json("GET", "/v1/tasks/dead", params={"limit": str(limit)}, admin=True)
        tasks: list[dict[str, Any]] = body["tasks"]
        return tasks

    async def replay(self, task_id: str) -> dict[str, Any]:
        """`POST /v1/tasks/{id}/replay`: submits a dead task again; returns the new `{"id", "status"}`."""
        result: dict[str, Any] = await self._json("POST", f"/v1/tasks/{_segment(task_id)}/replay", admin=True)
        return result

    # --- admin ---------------------------------------------------------------------------------

    async def breakers(self) -> list[dict[str, Any]]:
        """`GET /v1/admin/breakers`: every breaker with its state."""
        body = await self._json("GET", "/v1/admin/breakers", admin=True)
        breakers: list[dict[str, Any]] = body["breakers"]
        return breakers

    async def reset_breaker(self, name: str) -> dict[str, Any]:
        """`POST /v1/admin/breakers/{name}/reset`: closes the breaker."""
        result: dict[str, Any] = await self._json("POST", f"/v1/admin/breakers/{_segment(name)}/reset", admin=True)
        return result

    async def open_breaker(self, name: str) -> dict[str, Any]:
        """`POST /v1/admin/breakers/{name}/open`: forces the breaker open."""
        result: dict[str, Any] = await self._json("POST", f"/v1/admin/breakers/{_segment(name)}/open", admin=True)
        return result

    async def cache_stats(self) -> dict[str, Any]:
        """`GET /v1/admin/cache`: statistics per cache level."""
        result: dict[str, Any] = await self._json("GET", "/v1/admin/cache", admin=True)
        return result

    async def cache_flush(self, *, tenant: str | None = None) -> int:
        """`POST /v1/admin/cache/flush`: empties the cache (one tenant's namespace, or all).

        Returns:
            The number of entries removed, when the instance knows it.
        """
        params = {"tenant": tenant} if tenant else None
        body = await self._json("POST", "/v1/admin/cache/flush", params=params, admin=True)
        return int(body.get("flushed", 0))

    async def set_log_level(self, level: str) -> str:
        """`PUT /v1/admin/log-level`: changes the log level at run time; returns the new level."""
        body = await self._json("PUT", "/v1/admin/log-level", json={"level": level}, admin=True)
        return str(body["level"])

    async def drain(self) -> dict[str, Any]:
        """`POST /v1/admin/drain`: readiness turns false and intake stops."""
        result: dict[str, Any] = await self._json("POST", "/v1/admin/drain", admin=True)
        return result


def _segment(value: str) -> str:
    """`value` as one path segment: refuses what would change the route rather than escaping it."""
    if not value or "/" in value or value in (".", "..") or len(value) > 256:
        raise ValueError(f"expected an id or name without '/', got {value!r}")
    return quote(value, safe="")
