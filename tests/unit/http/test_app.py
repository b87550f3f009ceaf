"""The HTTP layer against an in-memory backend: routing, validation, errors, tenancy, middlewares.

The real service process with NATS is covered by tests/integration; this file pins the API contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from hulk.errors import BreakerOpen, QueueFull
from hulk.http import HttpOptions, create_app
from hulk.http.errors import status_for
from hulk.http.middleware import HttpMetrics
from hulk.http.models import SubmitTask
from hulk.http.openapi import openapi_document


class FakeBackend:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.full = False
        self.ready_ok = True
        self.level = "info"
        self.drained = False
        self.breaker_names = {"email"}
        self.opened: list[str] = []

    async def submit(self, request: SubmitTask, *, tenant: str, traceparent: str | None) -> Mapping[str, Any]:
        if self.full:
            raise QueueFull("queue full, retry later")
        if request.type == "boom":
            raise RuntimeError("handler registry exploded")
        task_id = f"t{len(self.tasks) + 1}"
        status = "succeeded" if request.type == "echo" else "queued"
        self.tasks[task_id] = {
            "id": task_id,
            "type": request.type,
            "status": status,
            "tenant": tenant,
            "result": request.payload,
            "traceparent": traceparent,
        }
        return {"id": task_id, "status": "queued"}

    async def get(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        task = self.tasks.get(task_id)
        return task if task is not None and task["tenant"] == tenant else None

    async def wait(self, task_id: str, *, tenant: str, timeout: float) -> Mapping[str, Any] | None:
        return await self.get(task_id, tenant=tenant)

    async def cancel(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        task = self.tasks.get(task_id)
        if task is None or task["tenant"] != tenant:
            return None
        task["status"] = "cancelled"
        return task

    async def list_dead(self, *, tenant: str | None, limit: int) -> Sequence[Mapping[str, Any]]:
        return [t for t in self.tasks.values() if t["status"] == "dead" and tenant in (None, t["tenant"])][:limit]

    async def replay(self, task_id: str, *, tenant: str | None) -> Mapping[str, Any] | None:
        task = self.tasks.get(task_id)
        if task is None or task["status"] != "dead":
            return None
        return {"id": task_id + "r", "status": "queued"}

    def runtime_info(self) -> Mapping[str, Any]:
        return {"instance": "i1", "workers": 4}

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        return self.ready_ok, {"nats": self.ready_ok}

    def breakers(self) -> Sequence[Mapping[str, Any]]:
        return [{"name": n, "state": "closed"} for n in sorted(self.breaker_names)]

    def reset_breaker(self, name: str) -> bool:
        return name in self.breaker_names

    def open_breaker(self, name: str) -> bool:
        self.opened.append(name)
        return name in self.breaker_names

    async def cache_stats(self) -> Mapping[str, Any]:
        return {"l1": {"hits": 1}}

    async def cache_flush(self, *, tenant: str | None) -> int:
        return 3

    def set_log_level(self, level: str) -> None:
        self.level = level

    async def drain(self) -> None:
        self.drained = True


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def make_client(backend: FakeBackend, **options: Any) -> httpx.AsyncClient:
    app = create_app(backend, HttpOptions(**options), metrics=lambda: (b"hulk_up 1\n", "text/plain"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hulk")


@pytest.fixture
async def client(backend: FakeBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(backend, admin_token="sekret") as c:
        yield c


async def test_health_ready_metrics(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["x-request-id"]
    assert (await client.get("/ready")).status_code == 200
    backend.ready_ok = False
    r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json()["ready"] is False
    r = await client.get("/metrics")
    assert r.text == "hulk_up 1\n"


async def test_metrics_disabled_is_404(backend: FakeBackend) -> None:
    app = create_app(backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        r = await c.get("/metrics")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "metrics_disabled"


async def test_submit_get_cancel_roundtrip(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tasks", json={"type": "sleep", "payload": {"ms": 1}}, headers={"traceparent": "00-x"})
    assert r.status_code == 202
    body = r.json()
    assert body == {"id": "t1", "status": "queued"}
    r = await client.get("/v1/tasks/t1")
    assert r.json()["status"] == "queued"
    r = await client.delete("/v1/tasks/t1")
    assert r.json()["status"] == "cancelled"
    assert (await client.get("/v1/tasks/nope")).status_code == 404
    assert (await client.delete("/v1/tasks/nope")).status_code == 404


async def test_submit_with_wait_returns_the_finished_task(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tasks?wait=2s", json={"type": "echo", "payload": [1, 2]})
    assert r.status_code == 200
    assert r.json()["result"] == [1, 2]
    r = await client.post("/v1/tasks?wait=2s", json={"type": "sleep"})
    assert r.status_code == 202
    r = await client.get("/v1/tasks/t1?wait=100ms")
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("url", "body", "status", "code", "field"),
    [
        ("/v1/tasks", b"{not json", 400, "malformed_json", None),
        ("/v1/tasks", b'{"payload": 1}', 422, "invalid_field", None),
        ("/v1/tasks", b'{"type": ""}', 422, "invalid_field", "$.type"),
        ("/v1/tasks", b'{"type": "a", "priority": 12}', 422, "invalid_field", "$.priority"),
        ("/v1/tasks", b'{"type": "a", "timeout": -1}', 422, "invalid_field", "$.timeout"),
        ("/v1/tasks", b'{"type": "a", "bogus": 1}', 422, "invalid_field", None),
        ("/v1/tasks?wait=forever", b'{"type": "a"}', 400, "invalid_query", "wait"),
        ("/v1/tasks?wait=2h", b'{"type": "a"}', 400, "invalid_query", "wait"),
        ("/v1/tasks/batch", b'{"tasks": []}', 422, "invalid_field", "$.tasks"),
        ("/v1/tasks/batch", b'{"tasks": [{"type": "ok"}, {"type": 5}]}', 422, "invalid_field", "$.tasks[1].type"),
    ],
)
async def test_bad_input_names_the_problem(
    client: httpx.AsyncClient, url: str, body: bytes, status: int, code: str, field: str | None
) -> None:
    r = await client.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == r.headers["x-request-id"]
    if field is not None:
        assert error["field"] == field


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tasks", content=b"type=a", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert "application/json" in r.json()["error"]["message"]


async def test_oversized_body_is_413(backend: FakeBackend) -> None:
    async with make_client(backend, body_limit=64) as c:
        big = {"type": "echo", "payload": "x" * 200}
        r = await c.post("/v1/tasks", json=big)
        assert r.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 20

        r = await c.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


async def test_backpressure_is_429_with_retry_after(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    backend.full = True
    r = await client.post("/v1/tasks", json={"type": "echo"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "queue_full"


async def test_unexpected_error_is_500_without_trace(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/tasks", json={"type": "boom"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["code"] == "internal_error"
    assert "Traceback" not in r.text
    assert body["error"]["request_id"] == r.headers["x-request-id"]


async def test_request_id_is_propagated(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = await client.put("/v1/tasks")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


async def test_batch_accepts_and_refuses_each_task(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    r = await client.post("/v1/tasks/batch", json={"tasks": [{"type": "echo"}, {"type": "sleep"}]})
    assert r.status_code == 202
    assert [i["id"] for i in r.json()["items"]] == ["t1", "t2"]
    backend.full = True
    r = await client.post("/v1/tasks/batch", json={"tasks": [{"type": "echo"}]})
    assert r.json()["items"][0]["error"].startswith("QueueFull")


async def test_tenants_from_tokens_are_isolated(backend: FakeBackend) -> None:
    async with make_client(backend, tenant_tokens={"tok-a": "a", "tok-b": "b"}) as c:
        assert (await c.post("/v1/tasks", json={"type": "x"})).status_code == 401
        bad = await c.post("/v1/tasks", json={"type": "x"}, headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401
        r = await c.post("/v1/tasks", json={"type": "x"}, headers={"authorization": "Bearer tok-a"})
        task_id = r.json()["id"]
        assert (await c.get(f"/v1/tasks/{task_id}", headers={"authorization": "Bearer tok-a"})).status_code == 200
        assert (await c.get(f"/v1/tasks/{task_id}", headers={"authorization": "Bearer tok-b"})).status_code == 404
        assert (await c.delete(f"/v1/tasks/{task_id}", headers={"authorization": "Bearer tok-b"})).status_code == 404
        assert backend.tasks[task_id]["status"] == "queued"


async def test_tenant_header_without_tokens(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    await client.post("/v1/tasks", json={"type": "x"}, headers={"x-hulk-tenant": "acme"})
    assert backend.tasks["t1"]["tenant"] == "acme"
    assert (await client.get("/v1/tasks/t1")).status_code == 404
    assert (await client.get("/v1/tasks/t1", headers={"x-hulk-tenant": "acme"})).status_code == 200


async def test_admin_routes_need_the_token(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    admin = {"authorization": "Bearer sekret"}
    assert (await client.get("/v1/admin/breakers")).status_code == 401
    assert (await client.get("/v1/admin/breakers", headers={"authorization": "Bearer x"})).status_code == 401
    r = await client.get("/v1/admin/breakers", headers=admin)
    assert r.json()["breakers"][0]["name"] == "email"
    assert (await client.post("/v1/admin/breakers/email/reset", headers=admin)).status_code == 200
    assert (await client.post("/v1/admin/breakers/email/open", headers=admin)).status_code == 200
    assert backend.opened == ["email"]
    assert (await client.post("/v1/admin/breakers/nope/reset", headers=admin)).status_code == 404
    assert (await client.post("/v1/admin/breakers/email/explode", headers=admin)).status_code == 404
    assert (await client.get("/v1/admin/cache", headers=admin)).json() == {"l1": {"hits": 1}}
    assert (await client.post("/v1/admin/cache/flush", headers=admin)).json() == {"flushed": 3}
    r = await client.put("/v1/admin/log-level", json={"level": "DEBUG"}, headers=admin)
    assert r.status_code == 200
    assert backend.level == "debug"
    r = await client.put("/v1/admin/log-level", json={"level": "loud"}, headers=admin)
    assert r.status_code == 422
    assert (await client.post("/v1/admin/drain", headers=admin)).status_code == 202
    assert backend.drained


async def test_admin_disabled_without_token(backend: FakeBackend) -> None:
    async with make_client(backend) as c:
        r = await c.get("/v1/admin/breakers", headers={"authorization": "Bearer x"})
        assert r.status_code == 403
        assert "admin_token" in r.json()["error"]["message"]


async def test_dead_listing_and_replay(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    await client.post("/v1/tasks", json={"type": "x"})
    backend.tasks["t1"]["status"] = "dead"
    r = await client.get("/v1/tasks/dead")
    assert [t["id"] for t in r.json()["tasks"]] == ["t1"]
    assert (await client.get("/v1/tasks/dead?limit=0")).status_code == 400
    r = await client.post("/v1/tasks/t1/replay")
    assert r.status_code == 202
    assert (await client.post("/v1/tasks/zzz/replay")).status_code == 404
    r = await client.get("/v1/tasks/dead", headers={"authorization": "Bearer sekret"})
    assert len(r.json()["tasks"]) == 1


async def test_runtime_info(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/runtime")).json()["workers"] == 4


async def test_timeout_answers_504(backend: FakeBackend) -> None:
    gate = asyncio.Event()

    async def slow_get(task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        await gate.wait()
        return None

    backend.get = slow_get  # type: ignore[method-assign]
    async with make_client(backend, request_timeout=0.05) as c:
        r = await c.get("/v1/tasks/t1")
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "timeout"


async def test_tracing_middleware_sets_route_and_status(backend: FakeBackend) -> None:
    spans: list[dict[str, Any]] = []

    class Span:
        def __init__(self) -> None:
            self.attrs: dict[str, Any] = {}
            spans.append(self.attrs)

        def __enter__(self) -> Span:
            return self

        def __exit__(self, *args: object) -> None:
            return None

        def set_attribute(self, key: str, value: Any) -> None:
            self.attrs[key] = value

    app = create_app(backend, start_span=lambda scope: Span())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        await c.get("/health")
        await c.get("/v1/tasks/x")
    assert spans == [{"http.response.status_code": 404, "http.route": "/v1/tasks/{task_id}"}]


async def test_http_metrics_are_recorded_per_route(backend: FakeBackend) -> None:
    metrics = HttpMetrics()
    app = create_app(backend, http_metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        await c.get("/health")
        await c.get("/health")
    assert metrics.histograms[("GET", "/health", "200")].snapshot()["count"] == 2


def test_status_table() -> None:
    exc = BreakerOpen("open")
    exc.retry_after = 2.2
    assert status_for(exc) == (503, "breaker_open", {"Retry-After": "3"})
    assert status_for(ValueError("x")) == (500, "internal_error", None)


def test_openapi_describes_every_route() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/tasks" in doc["paths"]
    assert "SubmitTask" in doc["components"]["schemas"]
    assert "429" in doc["paths"]["/v1/tasks"]["post"]["responses"]


async def test_static_and_parameterised_routes_share_labels_and_fallbacks(backend: FakeBackend) -> None:
    # Static routes are dispatched by (method, path) before the router; what they leave (HEAD, other
    # methods, paths with parameters) still reaches the router.
    metrics = HttpMetrics()
    app = create_app(backend, http_metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
        accepted = await c.post("/v1/tasks", json={"type": "echo", "payload": {}})
        assert accepted.status_code == 202
        assert (await c.get(f"/v1/tasks/{accepted.json()['id']}")).status_code == 200
        assert (await c.head("/health")).status_code == 200
        assert (await c.put("/v1/tasks/batch")).status_code == 405
    assert metrics.histograms[("POST", "/v1/tasks", "202")].snapshot()["count"] == 1
    assert metrics.histograms[("GET", "/v1/tasks/{task_id}", "200")].snapshot()["count"] == 1
    assert metrics.histograms[("HEAD", "/health", "200")].snapshot()["count"] == 1
