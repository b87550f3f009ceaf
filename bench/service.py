"""Starts and stops the HTTP services the load benchmarks measure: `hulk serve` and the bare Starlette app.

`hulk serve` runs on its embedded defaults (a local nats-server with JetStream in its data directory);
the bench only moves it to a free port and a temporary data directory, so a run never touches the
machine's own services or a previous run's state. Readiness is `GET /ready` answering 200 (`/health`
for the bare app). Stopping sends SIGTERM and waits for the process to exit, as an orchestrator would.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import psutil

from bench.peers.servers import free_port

__all__ = ["RssSampler", "Service", "hulk_serve_argv", "hulk_serve_missing"]

REPO = Path(__file__).resolve().parents[1]
Target = Literal["hulk", "bare"]
# hulk's start-up line, {"event":"hulk.ready",...,"url":"http://127.0.0.1:PORT",...} (JSON logs).
_READY_PORT = re.compile(r'"hulk\.ready".*?"url":\s*"http://[^"]*?:(\d+)"')


def hulk_serve_argv() -> list[str]:
    """`hulk serve`: the console script next to this interpreter, else `python -m hulk.cli.main serve`."""
    script = shutil.which("hulk", path=str(Path(sys.executable).parent))
    return [script, "serve"] if script else [sys.executable, "-m", "hulk.cli.main", "serve"]


def hulk_serve_missing() -> str | None:
    """Why `hulk serve` cannot run here (None when it can)."""
    if importlib.util.find_spec("hulk.service") is None:
        return "`hulk serve` cannot run on this tree yet (no hulk.service module)"
    try:
        out = subprocess.run(
            [*hulk_serve_argv(), "--help"], capture_output=True, text=True, timeout=60, check=False, cwd=REPO
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`hulk serve --help` failed: {exc}"
    if out.returncode != 0:
        return f"`hulk serve` is not available yet: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"
    return None


def _status(port: int, path: str, timeout: float = 1.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


class Service:
    """One service process on a free port.

    Args:
        target: "hulk" (`hulk serve`, embedded NATS) or "bare" (bench/bare_app.py under uvicorn).
        env: extra environment (e.g. `HULK_TELEMETRY__TRACING__ENABLED=true`).

    """

    def __init__(self, target: Target = "hulk", *, env: Mapping[str, str] | None = None) -> None:
        self.target = target
        # hulk binds port 0 and logs the port it got, so no other process on the machine can take its
        # port between a pick and the bind; the bare app's port is picked right before it starts.
        self.port = 0
        self._tmp = tempfile.TemporaryDirectory(prefix=f"hulk-bench-{target}-")
        self.data_dir = Path(self._tmp.name)
        self.log_path = self.data_dir / "service.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after = 0.0
        self.exit_code: int | None = None
        self.stop_seconds = 0.0

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def argv(self) -> list[str]:
        """The command that starts it."""
        if self.target == "hulk":
            return hulk_serve_argv()
        # Not `--fd` with a socket bound here: uvicorn takes an inherited fd for a Unix socket and then
        # leaves Nagle on (40 ms per response under wrk).
        uvicorn = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1"]
        port = str(self.port) if self.port else "<free port>"
        return [*uvicorn, "--port", port, "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]

    @property
    def shown_env(self) -> dict[str, str]:
        """The environment the bench sets (written next to the figures)."""
        if self.target == "bare":
            return dict(self.extra_env)
        return {
            "HULK_SERVER__HOST": "127.0.0.1",
            "HULK_SERVER__PORT": "0 (the port is read from the hulk.ready log line)",
            "HULK_NATS__DATA_DIR": "<temp dir>/nats",
            "HULK_NATS__EMBEDDED": "true",
            **self.extra_env,
        }

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        if self.target == "hulk":
            env.update(
                HULK_SERVER__HOST="127.0.0.1",
                HULK_SERVER__PORT="0",
                HULK_NATS__DATA_DIR=str(self.data_dir / "nats"),
                # "auto" would use a NATS server already answering on localhost:4222: never the machine's.
                HULK_NATS__EMBEDDED="true",
            )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 90.0) -> float:
        """Starts the process and waits for readiness; returns seconds from spawn to the first 200."""
        path = "/ready" if self.target == "hulk" else "/health"
        if self.target == "bare":
            self.port = free_port()
        with self.log_path.open("wb") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.data_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = self.started_at + timeout
        while not self.port or _status(self.port, path, timeout=0.5) != 200:
            if not self.port:
                match = _READY_PORT.search(self.log_tail(200_000))
                self.port = int(match.group(1)) if match else 0
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.target} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            # Readiness is the HTTP answer; this only paces the probes (5 ms resolution on cold start).
            time.sleep(0.005)
        self.ready_after = time.monotonic() - self.started_at
        return self.ready_after

    def log_tail(self, n: int = 3000) -> str:
        """The end of the service's output."""
        return self.log_path.read_text("utf-8", "replace")[-n:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to `timeout` for a clean exit (then SIGKILL to its group); returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is not None:
            t0 = time.monotonic()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.stop_seconds = time.monotonic() - t0
            self.exit_code = proc.returncode
            # Anything the service left in its session (an embedded server it failed to stop).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._tmp.cleanup()
        return self.exit_code

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RssSampler:
    """Samples the resident memory of a process and its children once per `interval`, in a thread."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (seconds since start, own MiB, tree MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                own = proc.memory_info().rss
                tree = own
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        tree += child.memory_info().rss
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - self._t0, own / 2**20, tree / 2**20))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, warmup: float, window: float) -> dict[str, float | int]:
        """Start, after-warm-up and end RSS (MiB, the process itself) and the growth after warm-up in %.

        `warm` is the median of the samples in [warmup, warmup + window], `end` the median of the last
        `window` seconds: medians, so one garbage-collection spike does not decide the verdict.
        """
        if not self.samples:
            return {"samples": 0}
        last = self.samples[-1][0]
        warm = [s[1] for s in self.samples if warmup <= s[0] <= warmup + window] or [self.samples[0][1]]
        end = [s[1] for s in self.samples if s[0] >= last - window] or [self.samples[-1][1]]
        warm_mib, end_mib = _median(warm), _median(end)
        return {
            "samples": len(self.samples),
            "start_mib": round(self.samples[0][1], 1),
            "warm_mib": round(warm_mib, 1),
            "end_mib": round(end_mib, 1),
            "peak_mib": round(max(s[1] for s in self.samples), 1),
            "tree_end_mib": round(self.samples[-1][2], 1),
            "growth_pct": round(100.0 * (end_mib - warm_mib) / warm_mib, 2) if warm_mib else 0.0,
        }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
