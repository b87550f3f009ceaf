"""The real `hulk serve` process for integration tests: started in a temp dir, stopped in `finally`.

`ServiceProcess` runs the `hulk` console script (or `python -c` on the CLI's `main` when the script is
missing) with a clean `HULK_*` environment, writes its stdout and stderr to a log file in its working
directory, and reads its port from the `hulk.ready` log line (the server binds port 0, so two instances
never race for a port). `/ready` answering 200 is the readiness signal; both waits have deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = "admin-secret"
TENANT_TOKENS = {"token-a": "tenant-a", "token-b": "tenant-b"}


def hulk_command() -> list[str]:
    """`hulk serve`: the venv's console script, else the CLI's entry point through this interpreter."""
    script = Path(sys.executable).with_name("hulk")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from hulk.cli.main import main; main()", "serve"]


def service_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any `HULK_*` variable, plus test defaults and `overrides`.

    Defaults: port 0 on loopback, JSON logs, tracing off (no collector to wait for at shutdown),
    four workers and a short drain deadline.
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HULK_")}
    env.update(
        HULK_SERVER__HOST="127.0.0.1",
        HULK_SERVER__PORT="0",
        HULK_LOGGING__FORMAT="json",
        HULK_TELEMETRY__TRACING__ENABLED="false",
        HULK_ENGINE__WORKERS="4",
        HULK_ENGINE__DRAIN_TIMEOUT="10s",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class ServiceError(RuntimeError):
    """The service exited or was not ready in time; the message carries its log."""


class ServiceProcess:
    """One `hulk serve` process.

    Args:
        cwd: working directory (its relative data dirs `data/nats`, `data/cache` land there).
        env: the full environment (see `service_env`).
        wrapper: a command that runs the rest of the command line (e.g. `unshare -n ...`); it must
            exec it, so the process is the service itself.
    """

    def __init__(self, cwd: Path, env: Mapping[str, str], *, wrapper: list[str] | None = None) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.wrapper = list(wrapper or [])
        self.log_path = cwd / "service.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, once started."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines printed so far (lines that are not JSON objects are skipped)."""
        out: list[dict[str, Any]] = []
        for line in self.log.splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    out.append(parsed)
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines whose `event` is `name`."""
        return [line for line in self.log_lines() if line.get("event") == name]

    def start(self, *, timeout: float = 30.0, wait_ready: bool = True) -> None:
        """Spawns the process; returns once `hulk.ready` is logged and (by default) `/ready` answers 200.

        Raises:
            ServiceError: it exited, or was not ready within `timeout` seconds.
        """
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.wrapper, *hulk_command()],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        for line in self._follow(deadline):
            if line.get("event") == "hulk.ready":
                self.port = int(str(line["url"]).rsplit(":", 1)[1])
                break
        if wait_ready:
            self.wait_ready(deadline - time.monotonic())

    def _follow(self, deadline: float) -> Iterator[dict[str, Any]]:
        seen = 0
        while True:
            lines = self.log_lines()
            yield from lines[seen:]
            seen = len(lines)
            if not self.running:
                raise ServiceError(f"hulk serve exited with {self._poll()} during start-up:\n{self.log}")
            if time.monotonic() > deadline:
                raise ServiceError(f"hulk serve logged no hulk.ready line in time:\n{self.log}")
            # The log file is the start-up signal; it is read again every 20 ms until the deadline.
            time.sleep(0.02)

    def _poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, timeout: float = 30.0, *, expect: int = 200) -> httpx.Response:
        """Polls `/ready` until it answers `expect` (200: ready, 503: not ready); returns that answer.

        Raises:
            ServiceError: the process exited, or `/ready` did not answer `expect` within `timeout`.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                try:
                    response = client.get("/ready")
                    if response.status_code == expect:
                        return response
                    last = f"{response.status_code} {response.text}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                if not self.running:
                    raise ServiceError(f"hulk serve exited with {self._poll()}:\n{self.log}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"/ready never answered {expect} (last: {last}):\n{self.log[-5000:]}")
                # The HTTP probe is the readiness signal; it is polled every 50 ms until the deadline.
                time.sleep(0.05)

    def send_signal(self, sig: signal.Signals) -> None:
        """Sends `sig` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit; returns its exit code."""
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Sends `sig`, waits up to `timeout` seconds, then kills; returns the exit code (None if killed)."""
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                self.returncode = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.returncode = None
        else:
            self.returncode = proc.returncode
        self.proc = None
        return self.returncode


def admin_headers() -> dict[str, str]:
    """Headers carrying the admin bearer token of the test services."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def client_for(service: ServiceProcess) -> httpx.Client:
    """A synchronous HTTP client on `service` (generous timeout: the machine is shared)."""
    return httpx.Client(base_url=service.url, timeout=30.0)
