"""Every endpoint and error path of the real service, with tenants from the `X-Hulk-Tenant` header.

One `hulk serve` process on one nats-server serves the whole module; the tests only add tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import ServiceProcess, client_for
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration

BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def service(module_nats: NatsServer, module_services: ServiceFactory) -> ServiceProcess:
    return module_services(
        module_nats,
        HULK_SERVER__BODY_LIMIT=str(BODY_LIMIT),
        HULK_ENGINE__MAX_RETRIES="1",
        HULK_ENGINE__BACKOFF__BASE="20ms",
        HULK_ENGINE__BACKOFF__MAX_DELAY="50ms",
        HULK_SCHEDULER__TICK_INTERVAL="100ms",
        HULK_SCHEDULER__LEASE_TTL="1s",
    )


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with client_for(service) as c:
        yield c


def submit(client: httpx.Client, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.post("/v1/tasks", json=body, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# --- probes and documents ---------------------------------------------------------------------------


def test_probes(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"nats": True, "engine": True, "draining": False, "event_loop_blocked": False},
    }


def test_openapi_lists_every_route(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/tasks", "/v1/tasks/{task_id}", "/v1/admin/drain", "/ready"} <= set(document["paths"])


def test_runtime(client: httpx.Client) -> None:
    info = client.get("/v1/runtime").json()
    assert info["nats"] == {"connected": True}
    assert info["workers"]["max"] == 4
    assert info["cache"]["mode"] == "l1+l3"


# --- tasks ------------------------------------------------------------------------------------------


def test_submit_then_get_with_wait(client: httpx.Client) -> None:
    accepted = submit(client, {"type": "echo", "payload": {"n": 1}})
    assert accepted.status_code == 202
    task_id = accepted.json()["id"]
    assert accepted.json() == {"id": task_id, "status": "queued"}
    done = client.get(f"/v1/tasks/{task_id}", params={"wait": "10s"})
    assert done.status_code == 200
    view = done.json()
    assert (view["id"], view["status"], view["result"], view["tenant"]) == (task_id, "succeeded", {"n": 1}, "default")
    assert client.get(f"/v1/tasks/{task_id}").json()["status"] == "succeeded"


def test_submit_with_wait_answers_the_finished_task(client: httpx.Client) -> None:
    response = submit(client, {"type": "echo", "payload": [1, 2]}, params={"wait": "10s"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["result"]) == ("succeeded", [1, 2])


def test_submit_with_short_wait_answers_202(client: httpx.Client) -> None:
    response = submit(client, {"type": "sleep", "payload": {"ms": 3000}}, params={"wait": "1ms"})
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "running")
    assert client.delete(f"/v1/tasks/{response.json()['id']}").status_code == 200


def test_every_fast_task_ends_succeeded(client: httpx.Client) -> None:
    ids = [submit(client, {"type": "echo", "payload": i}).json()["id"] for i in range(100)]
    views = [client.get(f"/v1/tasks/{task_id}", params={"wait": "10s"}).json() for task_id in ids]
    assert [(v["status"], v["result"]) for v in views] == [("succeeded", i) for i in range(100)]


def test_per_task_timeout_retries_and_priority_reach_the_engine(client: httpx.Client) -> None:
    body = {"type": "sleep", "payload": {"ms": 3000}, "timeout": 0.2, "max_retries": 0, "priority": 7}
    accepted = submit(client, body)
    assert accepted.status_code == 202
    task_id = accepted.json()["id"]
    first = client.get(f"/v1/tasks/{task_id}").json()
    assert (first["priority"], first["timeout"], first["max_retries"]) == (7, 0.2, 0)
    view = client.get(f"/v1/tasks/{task_id}", params={"wait": "20s"}).json()
    # The sleep type's own timeout is far longer: only the submitted 0.2 s can have stopped it, and
    # with max_retries 0 the first timed-out attempt is the last.
    assert (view["status"], view["attempt"], view["priority"]) == ("dead", 1, 7)
    assert "imeout" in view["error"]["type"]
    assert (view["timeout"], view["max_retries"]) == (0.2, 0)


def test_idempotency_key_gives_one_task(client: httpx.Client) -> None:
    body = {"type": "echo", "payload": "once", "idempotency_key": f"k-{uuid.uuid4()}"}
    first = submit(client, body, params={"wait": "10s"})
    assert first.json()["status"] == "succeeded"
    again = submit(client, body)
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    # The duplicate is dropped by the stream: the finished record stays finished.
    assert client.get(f"/v1/tasks/{first.json()['id']}", params={"wait": "5s"}).json()["status"] == "succeeded"


def test_same_idempotency_key_in_two_tenants_gives_two_tasks(client: httpx.Client) -> None:
    body = {"type": "echo", "payload": 1, "idempotency_key": f"k-{uuid.uuid4()}"}
    a = submit(client, body, headers={"X-Hulk-Tenant": "a"}).json()["id"]
    b = submit(client, body, headers={"X-Hulk-Tenant": "b"}).json()["id"]
    assert a != b
    view = client.get(f"/v1/tasks/{b}", params={"wait": "10s"}, headers={"X-Hulk-Tenant": "b"}).json()
    assert (view["status"], view["tenant"]) == ("succeeded", "b")


def test_delayed_task_runs_later(client: httpx.Client) -> None:
    accepted = submit(client, {"type": "echo", "payload": "later", "delay": 0.2})
    assert accepted.json()["status"] == "scheduled"
    view = client.get(f"/v1/tasks/{accepted.json()['id']}", params={"wait": "15s"}).json()
    assert (view["status"], view["result"]) == ("succeeded", "later")


def test_failing_task_dies_and_can_be_replayed(client: httpx.Client) -> None:
    task_id = submit(client, {"type": "fail"}).json()["id"]
    view = client.get(f"/v1/tasks/{task_id}", params={"wait": "15s"}).json()
    assert view["status"] == "dead"
    assert view["attempt"] == 2
    assert view["error"]["type"] == "BuiltinFailure"
    dead = client.get("/v1/tasks/dead").json()["tasks"]
    assert task_id in [t["id"] for t in dead]
    replayed = client.post(f"/v1/tasks/{task_id}/replay")
    assert replayed.status_code == 202
    assert replayed.json()["id"] != task_id
    assert client.get(f"/v1/tasks/{replayed.json()['id']}", params={"wait": "15s"}).json()["status"] == "dead"


def test_replay_of_a_live_or_unknown_task_is_404(client: httpx.Client) -> None:
    task_id = submit(client, {"type": "echo"}, params={"wait": "10s"}).json()["id"]
    assert error_of(client.post(f"/v1/tasks/{task_id}/replay"))["code"] == "task_not_found"
    assert client.post("/v1/tasks/nope/replay").status_code == 404


def test_cancel_a_running_task(client: httpx.Client) -> None:
    task_id = submit(client, {"type": "sleep", "payload": {"ms": 5000}}).json()["id"]
    cancelled = client.delete(f"/v1/tasks/{task_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.get(f"/v1/tasks/{task_id}").json()["status"] == "cancelled"
    # Cancelling a finished task answers its final state.
    assert client.delete(f"/v1/tasks/{task_id}").json()["status"] == "cancelled"


def test_batch_accepts_and_refuses_each_task(client: httpx.Client) -> None:
    tasks = [{"type": "echo", "payload": 1}, {"type": "no-such-type"}, {"type": "echo", "payload": 3}]
    response = client.post("/v1/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 202
    items = response.json()["items"]
    assert [item["index"] for item in items] == [0, 1, 2]
    assert "UnknownTaskType" in items[1]["error"]
    for item in (items[0], items[2]):
        assert client.get(f"/v1/tasks/{item['id']}", params={"wait": "10s"}).json()["status"] == "succeeded"


def test_tenants_from_the_header_are_isolated(client: httpx.Client) -> None:
    task_id = submit(client, {"type": "echo"}, headers={"X-Hulk-Tenant": "red"}).json()["id"]
    assert client.get(f"/v1/tasks/{task_id}", params={"wait": "10s"}, headers={"X-Hulk-Tenant": "red"}).is_success
    for headers in ({"X-Hulk-Tenant": "blue"}, {}):
        assert error_of(client.get(f"/v1/tasks/{task_id}", headers=headers))["code"] == "task_not_found"
        assert client.get(f"/v1/tasks/{task_id}", params={"wait": "1s"}, headers=headers).status_code == 404
        assert client.delete(f"/v1/tasks/{task_id}", headers=headers).status_code == 404
        assert client.post(f"/v1/tasks/{task_id}/replay", headers=headers).status_code == 404


# --- error paths ------------------------------------------------------------------------------------


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/tasks", content=b'{"type": "echo",', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    response = client.post("/v1/tasks", content=b'{"type": "echo"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert client.post("/v1/tasks", content=b'{"type": "echo"}').status_code == 415


def test_oversized_body_is_413(client: httpx.Client) -> None:
    response = submit(client, {"type": "echo", "payload": "x" * BODY_LIMIT})
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"


def test_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "echo", "payload": "'
        for _ in range(BODY_LIMIT // 512 + 1):
            yield b"x" * 512
        yield b'"}'

    response = client.post("/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_unknown_task_type_is_422(client: httpx.Client) -> None:
    response = submit(client, {"type": "no-such-type"})
    assert response.status_code == 422
    assert error_of(response)["code"] == "unknown_task_type"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": ""}, "$.type"),
        ({"type": "bad type!"}, "$.type"),
        ({"type": "echo", "priority": 10}, "$.priority"),
        ({"type": "echo", "delay": -1}, "$.delay"),
        ({"type": "echo", "surprise": 1}, None),
        ({"payload": 1}, None),
        ([1, 2], None),
    ],
)
def test_invalid_fields_are_422(client: httpx.Client, body: Any, field: str | None) -> None:
    response = submit(client, body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_field"
    if field is not None:
        assert error["field"] == field


@pytest.mark.parametrize("wait", ["soon", "-1s", "61s"])
def test_bad_wait_is_400(client: httpx.Client, wait: str) -> None:
    response = client.get("/v1/tasks/x", params={"wait": wait})
    assert response.status_code == 400
    assert error_of(response)["field"] == "wait"
    assert submit(client, {"type": "echo"}, params={"wait": wait}).status_code == 400


@pytest.mark.parametrize("limit", ["0", "1001", "many", "-1"])
def test_bad_limit_is_400(client: httpx.Client, limit: str) -> None:
    assert client.get("/v1/tasks/dead", params={"limit": limit}).status_code == 400


def test_unknown_task_is_404(client: httpx.Client) -> None:
    assert error_of(client.get("/v1/tasks/unknown"))["code"] == "task_not_found"
    assert client.get("/v1/tasks/unknown", params={"wait": "10ms"}).status_code == 404
    assert client.delete("/v1/tasks/unknown").status_code == 404


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert error_of(client.get("/v2/nothing"))["code"] == "not_found"
    response = client.put("/v1/tasks")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_admin_routes_are_disabled_without_an_admin_token(client: httpx.Client) -> None:
    for method, path in [("GET", "/v1/admin/breakers"), ("POST", "/v1/admin/drain"), ("GET", "/v1/admin/cache")]:
        response = client.request(method, path, headers={"Authorization": "Bearer anything"})
        assert response.status_code == 403
        assert error_of(response)["code"] == "admin_disabled"


def test_request_id_is_echoed(client: httpx.Client) -> None:
    assert client.get("/health", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/health").headers["x-request-id"]
