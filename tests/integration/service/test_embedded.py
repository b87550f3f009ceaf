"""Embedded defaults: with no configuration at all, `hulk serve` runs its own NATS, L1 and L3, and no L2.

The process runs in a private network namespace (`unshare --net`, loopback only), so "nothing answers
on localhost:4222 or :6379" holds whatever runs on this machine, and the default port 8080 is free.
The test talks to it from a thread that joined that namespace (`setns`, which is per thread).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest

from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import ServiceProcess

pytestmark = pytest.mark.integration

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_WRAPPER = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "hulk-netns"]


def _enter_netns(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns: {os.strerror(errno)}")
    finally:
        os.close(fd)


class InNamespace:
    """Runs calls in a thread that joined the network namespace of process `pid`."""

    def __init__(self, pid: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, initializer=_enter_netns, initargs=(pid,))

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result(timeout=60)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def bare_env() -> dict[str, str]:
    """This process's environment with no `HULK_*` variable: hulk's defaults apply to everything."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("HULK_")}


@pytest.fixture
def netns_service(start_service: ServiceFactory) -> Iterator[Callable[..., tuple[ServiceProcess, InNamespace]]]:
    for tool in ("unshare", "ip"):
        assert shutil.which(tool), f"{tool} is needed (util-linux, iproute2) and must run as root"
    made: list[InNamespace] = []

    def start(**env: str) -> tuple[ServiceProcess, InNamespace]:
        service = start_service(env={**bare_env(), **env}, wrapper=NETNS_WRAPPER, wait_ready=False)
        assert service.proc is not None
        ns = InNamespace(service.proc.pid)
        made.append(ns)
        ns.run(service.wait_ready)
        return service, ns

    try:
        yield start
    finally:
        for ns in made:
            ns.close()


def exercise(service: ServiceProcess) -> dict[str, Any]:
    with httpx.Client(base_url=service.url, timeout=30.0) as client:
        done = client.post("/v1/tasks", json={"type": "echo", "payload": "embedded"}, params={"wait": "10s"})
        return {"task": done.json(), "runtime": client.get("/v1/runtime").json()}


def test_no_configuration_at_all(netns_service: Callable[..., tuple[ServiceProcess, InNamespace]]) -> None:
    service, ns = netns_service()
    assert service.port == 8080
    seen = ns.run(exercise, service)
    assert (seen["task"]["status"], seen["task"]["result"]) == ("succeeded", "embedded")
    assert seen["runtime"]["nats"] == {"connected": True}
    assert seen["runtime"]["cache"]["mode"] == "l1+l3"
    assert seen["runtime"]["cache"]["status"] == "ok"

    assert service.stop(sig=signal.SIGINT) == 0
    assert service.events("hulk.ready")[0]["embedded_nats"] is True
    warnings = [line for line in service.log_lines() if line["level"] == "warning"]
    assert [line["event"] for line in warnings if "l2" in line["event"]] == ["cache.l2.disabled"]
    data = service.cwd / "data"
    assert (data / "cache").is_dir()
    nats_log = (data / "nats" / "nats" / "nats-server.log").read_text()
    assert "Server is ready" in nats_log
    assert "Server Exiting" in nats_log  # the embedded server was stopped with the service


def test_unreachable_redis_is_skipped_with_one_warning(
    netns_service: Callable[..., tuple[ServiceProcess, InNamespace]],
) -> None:
    service, ns = netns_service(HULK_CACHE__L2_URL="redis://127.0.0.1:6379/0", HULK_TELEMETRY__TRACING__ENABLED="false")
    seen = ns.run(exercise, service)
    assert seen["task"]["status"] == "succeeded"
    cache = seen["runtime"]["cache"]
    assert cache["l2"]["configured"] is True
    assert cache["l2"]["up"] is False
    assert cache["status"] == "degraded"
    assert service.stop() == 0
    warnings = [line for line in service.log_lines() if line["level"] == "warning"]
    assert [line["event"] for line in warnings if "l2" in line["event"]] == ["cache.l2.unavailable"]
