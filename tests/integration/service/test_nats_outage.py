"""Readiness and the API while NATS is down, and recovery once it is back."""

from __future__ import annotations

import pytest

from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import client_for
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration


def test_readiness_follows_nats(nats_server: NatsServer, start_service: ServiceFactory) -> None:
    service = start_service(nats_server)
    with client_for(service) as client:
        done = client.post("/v1/tasks", json={"type": "echo", "payload": "before"}, params={"wait": "10s"}).json()
        assert done["status"] == "succeeded"
        # A task that is still running when NATS goes away must still end succeeded.
        running = client.post("/v1/tasks", json={"type": "sleep", "payload": {"ms": 300}}).json()["id"]

        nats_server.stop()
        down = service.wait_ready(expect=503)
        assert down.json()["checks"]["nats"] is False
        assert down.json()["ready"] is False
        assert client.get("/health").status_code == 200

        refused = client.post("/v1/tasks", json={"type": "echo"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "nats_unavailable"
        assert int(refused.headers["retry-after"]) >= 1
        # Reads answer from what this instance knows, or say NATS is unavailable; never a 500.
        assert client.get(f"/v1/tasks/{done['id']}").json()["status"] == "succeeded"
        unknown = client.get("/v1/tasks/unknown-while-down")
        assert unknown.status_code in (404, 503), unknown.text
        assert client.get("/v1/runtime").json()["nats"] == {"connected": False}

        nats_server.start()
        service.wait_ready(expect=200)
        after = client.post("/v1/tasks", json={"type": "echo", "payload": "after"}, params={"wait": "10s"}).json()
        assert (after["status"], after["result"]) == ("succeeded", "after")
        assert client.get(f"/v1/tasks/{running}", params={"wait": "20s"}).json()["status"] == "succeeded"
    assert service.stop() == 0


def test_sigterm_while_nats_is_down_still_exits_0(nats_server: NatsServer, start_service: ServiceFactory) -> None:
    service = start_service(nats_server, HULK_ENGINE__DRAIN_TIMEOUT="1s")
    nats_server.stop()
    service.wait_ready(expect=503)
    assert service.stop(timeout=40.0) == 0
    stopped = service.events("hulk.stopped")
    assert [line["exit_code"] for line in stopped] == [0]
    # One warning for the outage, none per readiness probe.
    assert not [line for line in service.log_lines() if line["level"] == "error"]
