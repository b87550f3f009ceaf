"""Real servers for the tests, started on free ports with temporary dirs and torn down in `finally`.

`RedisServer` runs a private `redis-server` (never the machine's service on 6379): the port is picked
in Python (redis-server's `--port 0` disables TCP rather than choosing one), persistence is off, and
readiness is read from the server's log line, never guessed with a sleep. `stop()`, `start()` and
`restart()` keep the same port, so fault tests can take Redis away under a client and bring it back.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, Self

_READY_LINE = "Ready to accept connections"
_PORT_IN_USE = "Address already in use"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The path of `redis-server`, installing Debian's package when it is missing (root only).

    Raises:
        RuntimeError: redis-server is missing and cannot be installed here.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("redis-server is not installed; run `sudo apt-get install -y redis-server`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install redis-server failed:\n{done.stderr}")
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is still not on PATH after apt-get install")
    return found


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port, for tests.

    Args:
        startup_timeout: seconds to wait for the "Ready to accept connections" log line.
        extra_args: more `redis-server` arguments, e.g. `["--requirepass", "secret"]`.
    """

    def __init__(self, *, startup_timeout: float = 10.0, extra_args: list[str] | None = None) -> None:
        self.binary = redis_server_binary()
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.port = 0
        self._dir = tempfile.TemporaryDirectory(prefix="hulk-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: list[str] = []
        self._drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`, without credentials."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return "".join(self._log)

    def start(self) -> None:
        """Starts the server (on the same port as before, after a `stop()`), returning once it is ready.

        Raises:
            RuntimeError: it exited or did not print its ready line in time.
        """
        if self.running:
            return
        first = self.port == 0
        for _ in range(5 if first else 1):
            if first:
                self.port = free_port()
            if self._spawn():
                return
            if _PORT_IN_USE not in self.log:
                break
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log}")

    def _spawn(self) -> bool:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--logfile",
            "",
            "--daemonize",
            "no",
            *self.extra_args,
        ]
        self._log = []
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._proc = proc
        assert proc.stdout is not None
        if self._wait_ready(proc.stdout):
            self._drain = threading.Thread(target=self._drain_output, args=(proc.stdout,), daemon=True)
            self._drain.start()
            return True
        self._kill()
        return False

    def _wait_ready(self, stream: IO[bytes]) -> bool:
        # Raw reads on the descriptor: a buffered readline() would hide lines from select().
        fd = stream.fileno()
        deadline = time.monotonic() + self.startup_timeout
        pending = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not sel.select(remaining):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    return False
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._log.append(line.decode(errors="replace") + "\n")
                    if _READY_LINE in self._log[-1]:
                        if pending:
                            self._log.append(pending.decode(errors="replace"))
                        return True
        return False

    def _drain_output(self, stream: IO[bytes]) -> None:
        fd = stream.fileno()
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 65536):
                self._log.append(chunk.decode(errors="replace"))

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL) and waits for the process to end."""
        self._kill()

    def kill(self) -> None:
        """Kills the server at once (SIGKILL), as a crash would."""
        self._kill(graceful=False)

    def _kill(self, *, graceful: bool = True) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if graceful:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                else:
                    proc.kill()
                proc.wait(timeout=10)
        finally:
            if self._drain is not None:
                self._drain.join(timeout=5)  # the pipe reaches EOF once the server is gone
                self._drain = None
            if proc.stdout is not None:
                proc.stdout.close()

    def restart(self) -> None:
        """Stops and starts again on the same port (the data is gone: persistence is off)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes its temporary dir."""
        try:
            self.stop()
        finally:
            self._dir.cleanup()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
