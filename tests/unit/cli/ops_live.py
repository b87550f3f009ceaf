"""A live hulk HTTP API for the thor and hulk-mcp tests: the real app and a real uvicorn server on a
free port, over an in-memory `TaskBackend`; and a real nats-server with JetStream.

The server's socket is bound and listening before the server thread starts, so clients connect at
once (the kernel queues them until uvicorn accepts): no readiness wait is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from typer.testing import CliRunner, Result

from hulk.cli.thor import app
from hulk.errors import QueueClosed, QueueFull
from hulk.http import HttpOptions, create_app
from hulk.http.models import SubmitTask
from hulk.messaging.embedded import find_nats_server
from hulk.observability.logging import configure_logging, reset_logging
from tests.nats_servers import NatsServer

ADMIN_TOKEN = "admin-s3cret"
TERMINAL = ("succeeded", "dead", "cancelled")


class MemoryBackend:
    """The runtime operations, in memory.

    Task types: `echo` succeeds at once with its payload as result; `fail` dies at once; `slow` stays
    queued until cancelled or until `finish()`; anything else stays queued.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.events: dict[str, asyncio.Event] = {}
        self.ids = itertools.count(1)
        self.draining = False
        self.full = False
        self.level = "info"
        self.flushed: list[str | None] = []
        self.breaker_states = {"email": "closed", "payments": "open"}
        self.started = time.time()

    def _new_id(self) -> str:
        return f"t{next(self.ids):04d}"

    def add_dead(self, task_type: str = "fail", *, tenant: str = "default", reason: str = "boom") -> str:
        """Seeds a dead task (from the test's thread, before requests that read it)."""
        task_id = self._new_id()
        self.tasks[task_id] = {
            "id": task_id,
            "type": task_type,
            "status": "dead",
            "tenant": tenant,
            "attempt": 4,
            "max_retries": 3,
            "created_at": time.time() - 5,
            "finished_at": time.time(),
            "payload": {"n": 1},
            "error": {"type": "ValueError", "message": reason},
        }
        return task_id

    async def submit(self, request: SubmitTask, *, tenant: str, traceparent: str | None) -> Mapping[str, Any]:
        if self.draining:
            raise QueueClosed("draining: not taking tasks")
        if self.full:
            raise QueueFull("queue full, retry later")
        return self._create(request.type, request.payload, tenant, request.max_retries or 0)

    def _create(self, task_type: str, payload: Any, tenant: str, max_retries: int) -> dict[str, Any]:
        task_id = self._new_id()
        task: dict[str, Any] = {
            "id": task_id,
            "type": task_type,
            "status": "queued",
            "tenant": tenant,
            "attempt": 0,
            "max_retries": max_retries,
            "created_at": time.time(),
            "payload": payload,
        }
        self.tasks[task_id] = task
        self.events[task_id] = asyncio.Event()
        if task_type == "echo":
            self._finish(task_id, "succeeded", result=payload)
        elif task_type == "fail":
            self._finish(task_id, "dead", error={"type": "RuntimeError", "message": "handler failed"})
        return {"id": task_id, "status": "queued"}

    def _finish(self, task_id: str, status: str, **fields: Any) -> None:
        task = self.tasks[task_id]
        task.update(status=status, finished_at=time.time(), attempt=max(1, task["attempt"]), **fields)
        event = self.events.get(task_id)
        if event is not None:
            event.set()

    def _view(self, task_id: str, tenant: str | None) -> dict[str, Any] | None:
        task = self.tasks.get(task_id)
        if task is None or (tenant is not None and task["tenant"] != tenant):
            return None
        return {k: v for k, v in task.items() if k != "payload"}

    async def get(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        return self._view(task_id, tenant)

    async def wait(self, task_id: str, *, tenant: str, timeout: float) -> Mapping[str, Any] | None:
        view = self._view(task_id, tenant)
        if view is None or view["status"] in TERMINAL:
            return view
        event = self.events.setdefault(task_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self._view(task_id, tenant)

    async def cancel(self, task_id: str, *, tenant: str) -> Mapping[str, Any] | None:
        view = self._view(task_id, tenant)
        if view is None:
            return None
        if view["status"] not in TERMINAL:
            self._finish(task_id, "cancelled")
        return self._view(task_id, tenant)

    async def list_dead(self, *, tenant: str | None, limit: int) -> Sequence[Mapping[str, Any]]:
        dead = [
            self._view(t["id"], None)
            for t in reversed(self.tasks.values())
            if t["status"] == "dead" and tenant in (None, t["tenant"])
        ]
        return [d for d in dead if d is not None][:limit]

    async def replay(self, task_id: str, *, tenant: str | None) -> Mapping[str, Any] | None:
        task = self.tasks.get(task_id)
        if task is None or task["status"] != "dead" or tenant not in (None, task["tenant"]):
            return None
        if self.draining:
            raise QueueClosed("draining: not taking tasks")
        new_type = "replayed" if task["type"] == "fail" else task["type"]
        return self._create(new_type, task.get("payload"), task["tenant"], task["max_retries"])

    def runtime_info(self) -> Mapping[str, Any]:
        queued = sum(1 for t in self.tasks.values() if t["status"] == "queued")
        return {
            "instance": "mem-1",
            "version": "0.0.0-test",
            "workers": {"size": 4, "busy": 0},
            "queue": {"depth": queued, "capacity": 1000},
            "uptime_s": round(time.time() - self.started, 3),
        }

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        return not self.draining, {"nats": True, "draining": self.draining}

    def breakers(self) -> Sequence[Mapping[str, Any]]:
        return [
            {"name": name, "state": state, "failures": 0 if state == "closed" else 5}
            for name, state in sorted(self.breaker_states.items())
        ]

    def reset_breaker(self, name: str) -> bool:
        if name not in self.breaker_states:
            return False
        self.breaker_states[name] = "closed"
        return True

    def open_breaker(self, name: str) -> bool:
        if name not in self.breaker_states:
            return False
        self.breaker_states[name] = "open"
        return True

    async def cache_stats(self) -> Mapping[str, Any]:
        return {"l1": {"hits": 10, "misses": 2, "entries": 5}, "l2": {"hits": 1, "misses": 1, "state": "up"}}

    async def cache_flush(self, *, tenant: str | None) -> int:
        self.flushed.append(tenant)
        return 5

    def set_log_level(self, level: str) -> None:
        self.level = level

    async def drain(self) -> None:
        self.draining = True


@dataclass
class LiveApi:
    """A running API: its base URL, backend and admin token."""

    url: str
    backend: MemoryBackend
    admin_token: str = ADMIN_TOKEN


@contextlib.contextmanager
def serve_api(backend: MemoryBackend | None = None, *, admin_token: str = ADMIN_TOKEN) -> Iterator[LiveApi]:
    """Serves `create_app(backend)` with uvicorn on a free loopback port, in a background thread."""
    backend = backend or MemoryBackend()
    # The server shares the test's process: keep its logs out of the stdout the CLI runner captures.
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    app = create_app(backend, HttpOptions(admin_token=admin_token))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    # No log_config nor log_level: uvicorn then leaves the logging module (and its own loggers' levels) alone.
    config = uvicorn.Config(app, log_config=None, log_level=None, lifespan="off", loop="asyncio", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-api", daemon=True)
    thread.start()
    try:
        yield LiveApi(url=f"http://127.0.0.1:{port}", backend=backend, admin_token=admin_token)
    finally:
        server.should_exit = True
        server.force_exit = True  # do not wait for requests a test left hanging
        thread.join(timeout=15)
        sock.close()
        reset_logging()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


_LISTEN = re.compile(r"Listening for client connections on [^\s]*:(\d+)")


@contextlib.contextmanager
def nats_server(store: Path, **auth: str) -> Iterator[str]:
    """A JetStream nats-server (`tests.nats_servers.NatsServer`) with optional `user`/`password`/`token`.

    Yields:
        Its URL.
    """
    server = NatsServer(store, **auth)
    server.start(timeout=30.0)
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def plain_nats_server() -> Iterator[str]:
    """A nats-server without JetStream on a free port (`-p -1`), ready when its log says so.

    Yields:
        Its URL.
    """
    proc = subprocess.Popen(
        [find_nats_server(), "-a", "127.0.0.1", "-p", "-1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        seen: list[str] = []
        for line in proc.stderr:
            seen.append(line)
            match = _LISTEN.search(line)
            if match:
                port = int(match.group(1))
            if "Server is ready" in line:
                break
        if port is None:
            raise RuntimeError("nats-server did not start:\n" + "".join(seen))
        # Keep reading its log so the pipe never fills.
        threading.Thread(target=proc.stderr.read, name="nats-log", daemon=True).start()
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        if proc.stderr is not None:
            proc.stderr.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


runner = CliRunner()


def thor(live: LiveApi | None, *args: str, admin: bool = True, stdin: str | None = None) -> Result:
    """Runs thor with `--url` (and the admin `--token` unless `admin=False`) of `live`."""
    head: list[str] = []
    if live is not None:
        head = ["--url", live.url]
        if admin:
            head += ["--token", live.admin_token]
    return runner.invoke(app, [*head, *args], input=stdin)


def as_json(result: Result) -> Any:
    """The JSON a successful command printed."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
