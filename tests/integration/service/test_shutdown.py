"""Graceful shutdown under load: SIGTERM mid-way, and every accepted task still ends, on another instance.

The first instance is stopped while clients are still submitting: it must exit 0, hand tasks it did
not finish back to JetStream, and lose nothing. A second instance on the same NATS then shows every
accepted id in a terminal state.
"""

from __future__ import annotations

import asyncio
import random
import signal
from typing import Any

import httpx
import pytest

from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import ADMIN_TOKEN, ServiceProcess, admin_headers, client_for
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration

TASKS = 300
SIGNAL_AFTER = 150
LONG_TASK_MS = 1500
DRAIN_TIMEOUT = "500ms"


def workload() -> list[dict[str, Any]]:
    """Sleep tasks of 20–50 ms, and a few longer than the drain deadline (interrupted, handed back)."""
    rng = random.Random(20)
    bodies: list[dict[str, Any]] = [{"type": "sleep", "payload": {"ms": rng.randint(20, 50)}} for _ in range(TASKS)]
    for i in range(0, TASKS, 75):
        bodies[i] = {"type": "sleep", "payload": {"ms": LONG_TASK_MS}}
    return bodies


async def submit_and_stop_midway(service: ServiceProcess, bodies: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Submits from 16 clients at once; sends SIGTERM once SIGNAL_AFTER are accepted. Returns (ids, refused)."""
    accepted: list[str] = []
    refused = 0
    pending = iter(bodies)
    signalled = False

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal refused, signalled
        for body in pending:
            try:
                response = await client.post("/v1/tasks", json=body)
            except httpx.TransportError:
                refused += 1  # the server closed during the shutdown: not accepted
                continue
            if response.status_code != 202:
                refused += 1
                continue
            accepted.append(response.json()["id"])
            if len(accepted) >= SIGNAL_AFTER and not signalled:
                signalled = True
                service.send_signal(signal.SIGTERM)

    async with httpx.AsyncClient(base_url=service.url, timeout=30.0) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(16)))
    assert signalled
    return accepted, refused


async def final_states(service: ServiceProcess, ids: list[str]) -> dict[str, str]:
    limit = asyncio.Semaphore(32)

    async def one(client: httpx.AsyncClient, task_id: str) -> tuple[str, str]:
        async with limit:
            response = await client.get(f"/v1/tasks/{task_id}", params={"wait": "30s"})
        assert response.status_code == 200, response.text
        return task_id, str(response.json()["status"])

    async with httpx.AsyncClient(base_url=service.url, timeout=60.0) as client:
        return dict(await asyncio.gather(*(one(client, task_id) for task_id in ids)))


async def test_sigterm_under_load_loses_no_accepted_task(
    nats_server: NatsServer, start_service: ServiceFactory
) -> None:
    first = start_service(nats_server, HULK_ENGINE__WORKERS="8", HULK_ENGINE__DRAIN_TIMEOUT=DRAIN_TIMEOUT)
    accepted, refused = await submit_and_stop_midway(first, workload())
    assert len(accepted) + refused == TASKS
    assert len(accepted) >= SIGNAL_AFTER

    assert await asyncio.to_thread(first.wait, 60.0) == 0
    order = [line["event"] for line in first.log_lines() if str(line.get("event", "")).startswith("hulk.")]
    assert order[-3:] == ["hulk.draining", "hulk.drained", "hulk.stopped"]
    drained = first.events("hulk.drained")[0]
    # A long task running when SIGTERM came cannot finish within the deadline and is handed back to
    # JetStream (nak). Whether one was running at that instant depends on scheduling (it may still be
    # in the stream), so the hand-back is checked when the drain reports an attempt cut short.
    if not drained["finished_in_time"]:
        assert drained["requeued"] >= 1
    # Submissions that come once NATS is closed are refused with 503 (logged); nothing else went wrong.
    errors = [line for line in first.log_lines() if line["level"] in ("error", "critical")]
    assert [line for line in errors if (line["event"], line.get("status")) != ("http.request", 503)] == []

    second = await asyncio.to_thread(start_service, nats_server, HULK_ENGINE__WORKERS="8")
    states = await final_states(second, accepted)
    assert sorted(set(states.values())) == ["succeeded"], {s: list(states.values()).count(s) for s in states.values()}
    assert await asyncio.to_thread(second.stop, sig=signal.SIGINT) == 0


def test_admin_drain_turns_readiness_false_then_exits_0(nats_server: NatsServer, start_service: ServiceFactory) -> None:
    service = start_service(nats_server, HULK_SERVER__ADMIN_TOKEN=ADMIN_TOKEN)
    with client_for(service) as client:
        running = client.post("/v1/tasks", json={"type": "sleep", "payload": {"ms": 1500}}).json()["id"]
        assert client.get(f"/v1/tasks/{running}", params={"wait": "1ms"}).json()["status"] in ("queued", "running")
        drained = client.post("/v1/admin/drain", headers=admin_headers())
        assert (drained.status_code, drained.json()) == (202, {"draining": True})
        # The running task keeps the instance up (the drain deadline is 10 s): it is not ready meanwhile.
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["draining"] is True
    assert service.wait(30.0) == 0
    assert service.events("hulk.drained")[0]["finished_in_time"] is True
    second = start_service(nats_server)
    with client_for(second) as client:
        assert client.get(f"/v1/tasks/{running}", params={"wait": "10s"}).json()["status"] == "succeeded"
