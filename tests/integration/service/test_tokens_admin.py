"""Tenants from bearer tokens, token checks and the admin routes, on a service with Redis as its L2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import ADMIN_TOKEN, TENANT_TOKENS, ServiceProcess, admin_headers, client_for
from tests.nats_servers import NatsServer
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

A = {"Authorization": "Bearer token-a"}
B = {"Authorization": "Bearer token-b"}
ADMIN = admin_headers()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def service(module_nats: NatsServer, module_services: ServiceFactory, redis: RedisServer) -> ServiceProcess:
    return module_services(
        module_nats,
        HULK_SERVER__ADMIN_TOKEN=ADMIN_TOKEN,
        HULK_SERVER__TENANT_TOKENS=json.dumps(TENANT_TOKENS),
        HULK_CACHE__L2_URL=redis.url,
        HULK_ENGINE__MAX_RETRIES="0",
    )


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with client_for(service) as c:
        yield c


def code_of(response: httpx.Response) -> str:
    error: dict[str, Any] = response.json()["error"]
    return str(error["code"])


def finished(client: httpx.Client, task_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}", params={"wait": "10s"}, headers=headers)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


# --- tenants and tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dG9rZW4tYTo="},
        {"Authorization": "Bearer"},
        {"X-Hulk-Tenant": "tenant-a"},  # the header names no tenant once tokens are configured
    ],
)
def test_tenant_routes_need_a_known_token(client: httpx.Client, headers: dict[str, str]) -> None:
    routes = [("POST", "/v1/tasks"), ("GET", "/v1/tasks/x"), ("DELETE", "/v1/tasks/x"), ("GET", "/v1/runtime")]
    for method, path in routes:
        response = client.request(method, path, headers=headers, json={"type": "echo"})
        assert response.status_code == 401, (method, path)
        assert code_of(response) == "unauthorized"
    assert client.get("/health", headers=headers).status_code == 200
    assert client.get("/ready", headers=headers).status_code == 200


def test_the_token_decides_the_tenant(client: httpx.Client) -> None:
    task_id = client.post("/v1/tasks", json={"type": "echo", "payload": "mine"}, headers=A).json()["id"]
    view = finished(client, task_id, A)
    assert (view["tenant"], view["result"]) == ("tenant-a", "mine")
    # Tenant b sees nothing of it, whatever it tries.
    assert code_of(client.get(f"/v1/tasks/{task_id}", headers=B)) == "task_not_found"
    assert client.get(f"/v1/tasks/{task_id}", params={"wait": "1s"}, headers=B).status_code == 404
    assert client.delete(f"/v1/tasks/{task_id}", headers=B).status_code == 404
    assert client.get(f"/v1/tasks/{task_id}", headers={**B, "X-Hulk-Tenant": "tenant-a"}).status_code == 404


def test_dead_tasks_per_tenant_and_for_the_admin(client: httpx.Client) -> None:
    a_dead = client.post("/v1/tasks", json={"type": "fail"}, headers=A).json()["id"]
    b_dead = client.post("/v1/tasks", json={"type": "fail"}, headers=B).json()["id"]
    assert finished(client, a_dead, A)["status"] == "dead"
    assert finished(client, b_dead, B)["status"] == "dead"
    seen_by_a = {t["id"] for t in client.get("/v1/tasks/dead", headers=A).json()["tasks"]}
    seen_by_admin = {t["id"] for t in client.get("/v1/tasks/dead", headers=ADMIN).json()["tasks"]}
    assert a_dead in seen_by_a
    assert b_dead not in seen_by_a
    assert {a_dead, b_dead} <= seen_by_admin
    # Tenant b cannot replay tenant a's task; the admin can, as tenant a.
    assert client.post(f"/v1/tasks/{a_dead}/replay", headers=B).status_code == 404
    replayed = client.post(f"/v1/tasks/{a_dead}/replay", headers=ADMIN)
    assert replayed.status_code == 202
    assert finished(client, replayed.json()["id"], A)["tenant"] == "tenant-a"


# --- admin routes -----------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/v1/admin/breakers"),
    ("POST", "/v1/admin/breakers/cache-l2/reset"),
    ("GET", "/v1/admin/cache"),
    ("POST", "/v1/admin/cache/flush"),
    ("PUT", "/v1/admin/log-level"),
    ("POST", "/v1/admin/drain"),
]


@pytest.mark.parametrize("headers", [{}, A, {"Authorization": f"Bearer {ADMIN_TOKEN}x"}])
def test_admin_routes_need_the_admin_token(client: httpx.Client, headers: dict[str, str]) -> None:
    for method, path in ADMIN_ROUTES:
        response = client.request(method, path, headers=headers, json={"level": "info"})
        assert response.status_code == 401, (method, path)
        assert code_of(response) == "unauthorized"
    assert client.get("/ready").status_code == 200  # nothing was drained


def test_cache_with_redis_as_l2(client: httpx.Client) -> None:
    runtime = client.get("/v1/runtime", headers=A).json()
    assert runtime["cache"]["mode"] == "l1+l2+l3"
    assert runtime["cache"]["l2"]["up"] is True
    stats = client.get("/v1/admin/cache", headers=ADMIN).json()
    assert stats["mode"] == "l1+l2+l3"
    flushed = client.post("/v1/admin/cache/flush", headers=ADMIN)
    assert flushed.status_code == 200
    assert flushed.json()["flushed"] >= 0
    one_tenant = client.post("/v1/admin/cache/flush", params={"tenant": "acme"}, headers=ADMIN)
    assert one_tenant.status_code == 200
    assert one_tenant.json()["flushed"] >= 0
    refused = client.post("/v1/admin/cache/flush", params={"tenant": "no spaces"}, headers=ADMIN)
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "tenant"


def test_breakers_list_reset_and_force_open(client: httpx.Client) -> None:
    breakers = {b["name"]: b for b in client.get("/v1/admin/breakers", headers=ADMIN).json()["breakers"]}
    assert breakers["cache-l2"]["state"] == "closed"
    opened = client.post("/v1/admin/breakers/cache-l2/open", headers=ADMIN)
    assert opened.json() == {"name": "cache-l2", "action": "open"}
    breakers = {b["name"]: b for b in client.get("/v1/admin/breakers", headers=ADMIN).json()["breakers"]}
    assert breakers["cache-l2"]["state"] != "closed"
    assert client.post("/v1/admin/breakers/cache-l2/reset", headers=ADMIN).status_code == 200
    breakers = {b["name"]: b for b in client.get("/v1/admin/breakers", headers=ADMIN).json()["breakers"]}
    assert breakers["cache-l2"]["state"] == "closed"
    assert code_of(client.post("/v1/admin/breakers/nope/reset", headers=ADMIN)) == "breaker_not_found"
    assert code_of(client.post("/v1/admin/breakers/cache-l2/explode", headers=ADMIN)) == "not_found"


def test_log_level_at_run_time(client: httpx.Client, service: ServiceProcess) -> None:
    response = client.put("/v1/admin/log-level", json={"level": "DEBUG"}, headers=ADMIN)
    assert response.json() == {"level": "debug"}
    try:
        client.get("/v1/runtime", headers={**A, "X-Request-Id": "debug-probe-1"})
        # The access log is written at debug level, once the response is sent: read it from the log file.
        client.put("/v1/admin/log-level", json={"level": "info"}, headers=ADMIN)
        lines = [line for line in service.log_lines() if line.get("request_id") == "debug-probe-1"]
        assert [(line["event"], line["status"], line["level"]) for line in lines] == [("http.request", 200, "debug")]
    finally:
        client.put("/v1/admin/log-level", json={"level": "info"}, headers=ADMIN)
    assert client.put("/v1/admin/log-level", json={"level": "loud"}, headers=ADMIN).status_code == 422
    assert client.put("/v1/admin/log-level", content=b"debug", headers=ADMIN).status_code == 415
    assert client.put("/v1/admin/log-level", json={"lvl": "info"}, headers=ADMIN).status_code == 422
