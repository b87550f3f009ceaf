"""Runs one peer's producer + worker process pair over N no-op tasks and prints one JSON result line.

Every peer is measured the same way:

1. the bench starts a fresh server (nats-server -js or redis-server) on a free port;
2. it starts the peer's worker process (its own CLI where the peer has one) and waits until the
   worker says it is consuming (a ready file written from the peer's start-up hook);
3. it starts the producer process, which submits N tasks through the peer's client API as fast as
   that API allows (asyncio clients keep `window` submissions in flight, synchronous clients send
   from one thread), and records the monotonic time of its first submission;
4. the worker's no-op task counts executions; the N-th writes the monotonic time to a done file;
5. on NATS, the run ends only when no consumer of any stream has an unacknowledged message left
   (checked every 5 ms from then on): a worker that acks after its own bookkeeping, as hulk does
   after storing each task's terminal record, is timed to the end of that work.

tasks/s = N / (end of the run − time of the first submission): producer and worker run at the same
time, so this is the end-to-end throughput of the pair, not a drain of a pre-filled queue.
CLOCK_MONOTONIC is system-wide on Linux, so the processes' clocks agree. Each result also carries
the CPU seconds the worker (with its children), the server and the producer spent in the run.

Environment handed to the worker and producer: HULK_PEER_URL (server URL), HULK_PEER_TASKS,
HULK_PEER_WINDOW, HULK_PEER_READY and HULK_PEER_DONE (file paths).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import inspect
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import psutil

from bench.peers.servers import NatsServer, RedisServer

__all__ = [
    "PeerSpec",
    "TaskCounter",
    "env_int",
    "env_url",
    "in_threads",
    "in_windows",
    "main",
    "mark_ready",
    "python_worker",
    "run_peer",
    "use_uvloop",
]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WINDOW = 256

# produce(url, n, window, mark_start): submits n no-op tasks; calls mark_start() right before the first
# submission (connection set-up is not part of the measured time). Sync or async.
Producer = Callable[[str, int, int, Callable[[], None]], Awaitable[None] | None]


@dataclass(frozen=True, kw_only=True)
class PeerSpec:
    """What the harness needs to know about one peer.

    Args:
        name: short name used in results (`celery`, `raw-nats`, ...).
        module: this peer's module (`bench.peers.celery_peer`), run as `python -m` for the producer.
        server: which server the peer uses.
        packages: distributions whose versions are reported.
        config: the peer's configuration, written next to its numbers.
        worker_argv: the worker command (argv), started with the HULK_PEER_* environment.
        produce: `produce(url, n, window, mark_start)`, sync or async: submits n no-op tasks.
        durable: what "done" means for this peer's durability (written next to its numbers).
        work: the worker's body when the peer has no worker CLI (`--role worker` runs it on uvloop).
        worker_env: extra environment of the worker process (`{url}` is replaced by the server URL).
        ready_port_env: when set, the worker is `hulk serve`: the harness sets this variable to 0 (any
            free port), reads the port from the worker's `hulk.ready` log line and waits for
            `GET /ready` 200 instead of the ready file.
        notes: anything else a reader should know next to the numbers.

    """

    name: str
    module: str
    server: Literal["nats", "redis"]
    packages: tuple[str, ...]
    config: Mapping[str, object]
    worker_argv: Callable[[], list[str]]
    produce: Producer
    durable: str
    work: Callable[[], Awaitable[None]] | None = None
    worker_env: Mapping[str, str] = field(default_factory=dict)
    ready_port_env: str | None = None
    notes: tuple[str, ...] = field(default=())


def env_url() -> str:
    """The server URL handed to the worker and producer."""
    return os.environ.get("HULK_PEER_URL", "")


def env_int(name: str, default: int) -> int:
    """An integer from the HULK_PEER_* environment."""
    return int(os.environ.get(name, default))


def mark_ready() -> None:
    """Called from the peer's worker start-up hook: the worker now consumes."""
    path = os.environ.get("HULK_PEER_READY")
    if path:
        Path(path).write_text(str(os.getpid()))


class TaskCounter:
    """Counts no-op executions in the worker process; the N-th writes its monotonic time to the done file.

    `tick()` is one `next()` on an `itertools.count` (atomic under the GIL, so worker threads can
    share it) and one integer comparison: cheap next to any runtime's per-task cost.
    """

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._target = env_int("HULK_PEER_TASKS", 0)
        self._done = os.environ.get("HULK_PEER_DONE", "")

    def tick(self) -> None:
        """Records one execution."""
        if next(self._count) == self._target and self._done:
            now = time.monotonic()
            tmp = Path(self._done + ".tmp")
            tmp.write_text(repr(now))
            tmp.replace(self._done)


async def in_windows(n: int, window: int, submit: Callable[[int], Awaitable[object]]) -> None:
    """Submits tasks 0..n-1 with up to `window` submissions in flight (one gather per window).

    Every asyncio producer in the bench uses this same pattern, so the producers differ only by
    their client's cost per submission.
    """
    for base in range(0, n, window):
        await asyncio.gather(*(submit(i) for i in range(base, min(n, base + window))))


def in_threads(n: int, threads: int, submit: Callable[[int], object]) -> None:
    """Submits tasks 0..n-1 from `threads` threads (synchronous clients), each sending a contiguous slice."""
    from concurrent.futures import ThreadPoolExecutor

    def send(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            submit(i)

    step = -(-n // threads)
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(send, lo, min(n, lo + step)) for lo in range(0, n, step)]:
            f.result()


def use_uvloop() -> None:
    """Runs asyncio on uvloop (every asyncio process in the bench does, hulk included)."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _tree_cpu(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to the worker's own process group (it was started in a new session), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: worker exited with {proc.returncode}\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not seen after {timeout:.0f}s\n{_tail(log)}")
        # The worker writes the file; this only paces the checks (the time is in the file).
        time.sleep(0.005)
    return path.read_text()


async def _settled(url: str, timeout: float) -> float:
    """Waits until no consumer of any stream has an unacknowledged message; returns when (monotonic)."""
    import nats  # the bench's NATS client; only NATS peers get here

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            pending = 0
            for stream in await js.streams_info():
                for consumer in await js.consumers_info(str(stream.config.name)):
                    pending += consumer.num_ack_pending or 0
            if not pending:
                return now
            if now > deadline:
                raise RuntimeError(f"{pending} messages still unacknowledged after {timeout:.0f}s")
            # Paces the checks; the time of the first check that saw nothing pending is the end.
            await asyncio.sleep(0.005)
    finally:
        await nc.close()


# hulk's start-up line, {"event":"hulk.ready",...,"url":"http://127.0.0.1:PORT",...}.
_READY_PORT = re.compile(r'"hulk\.ready".*?"url":\s*"http://[^"]*?:(\d+)"')


def _http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def _wait_http_ready(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    port = 0
    while True:
        if not port:
            match = _READY_PORT.search(_tail(log, 200_000))
            port = int(match.group(1)) if match else 0
        if port and _http_status(port, "/ready") == 200:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker ready: worker exited with {proc.returncode}\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker ready: /ready not 200 after {timeout:.0f}s\n{_tail(log)}")
        # Readiness is the HTTP answer; this only paces the probes.
        time.sleep(0.02)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text("utf-8", "replace")[-n:] if path.exists() else ""


def run_peer(spec: PeerSpec, *, tasks: int, window: int = DEFAULT_WINDOW, timeout: float = 300.0) -> dict[str, Any]:
    """Starts a server, the worker, then the producer; returns the result (see the module docstring)."""
    server: NatsServer | RedisServer = NatsServer() if spec.server == "nats" else RedisServer()
    server.start()
    work = Path(tempfile.mkdtemp(prefix=f"hulk-bench-{spec.name}-"))
    ready, done, log = work / "ready", work / "done", work / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "HULK_PEER_URL": server.url,
        "HULK_PEER_TASKS": str(tasks),
        "HULK_PEER_WINDOW": str(window),
        "HULK_PEER_READY": str(ready),
        "HULK_PEER_DONE": str(done),
    }
    worker_env = {**env, **{k: v.replace("{url}", server.url) for k, v in spec.worker_env.items()}}
    if spec.ready_port_env:
        worker_env[spec.ready_port_env] = "0"  # any free port: the worker logs the one it bound
    worker_argv = spec.worker_argv()
    producer_argv = [sys.executable, "-m", spec.module, "--role", "producer"]
    worker: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as log_file:
            worker = subprocess.Popen(
                worker_argv,
                env=worker_env,
                cwd=work,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if spec.ready_port_env:
            _wait_http_ready(worker, 90.0, log)
        else:
            _wait_file(ready, worker, 60.0, "worker ready", log)
        cpu_before = _tree_cpu(worker.pid)
        server_before = _tree_cpu(server.pid)
        producer = subprocess.run(
            producer_argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
        if producer.returncode != 0:
            raise RuntimeError(f"producer failed ({producer.returncode}): {producer.stderr[-3000:]}")
        sent = json.loads(producer.stdout.strip().splitlines()[-1])
        t_done = float(_wait_file(done, worker, timeout, "last task executed", log))
        if spec.server == "nats":
            # Executed is not finished: the run ends when every message is acknowledged too (for
            # hulk, that is after each task's terminal record is stored).
            t_done = max(t_done, asyncio.run(_settled(server.url, timeout)))
        cpu = _tree_cpu(worker.pid) - cpu_before
        server_cpu = _tree_cpu(server.pid) - server_before
    finally:
        if worker is not None:
            _stop_group(worker)
        server.stop()
        if not os.environ.get("HULK_PEER_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    t0, t1 = float(sent["t0"]), float(sent["t1"])
    return {
        "peer": spec.name,
        "tasks": tasks,
        "tasks_per_s": round(tasks / (t_done - t0), 1),
        "submit_per_s": round(tasks / (t1 - t0), 1),
        "seconds": round(t_done - t0, 3),
        "worker_cpu_s": round(cpu, 3),
        "server_cpu_s": round(server_cpu, 3),
        "producer_cpu_s": round(float(sent["cpu"]), 3),
        "window": window,
        "server": {"kind": spec.server, "version": server.version(), "config": server.config()},
        "versions": _versions(spec.packages),
        "config": dict(spec.config),
        "durable": spec.durable,
        "notes": list(spec.notes),
        "worker_command": " ".join(worker_argv),
        "python": platform.python_version(),
    }


def _produce(spec: PeerSpec) -> None:
    url, n, window = env_url(), env_int("HULK_PEER_TASKS", 0), env_int("HULK_PEER_WINDOW", DEFAULT_WINDOW)
    started: list[float] = []

    def mark_start() -> None:
        started.append(time.monotonic())
        started.append(time.process_time())

    if inspect.iscoroutinefunction(spec.produce):
        use_uvloop()
        asyncio.run(spec.produce(url, n, window, mark_start))
    else:
        spec.produce(url, n, window, mark_start)
    t1 = time.monotonic()
    cpu = time.process_time() - started[1]
    print(json.dumps({"t0": started[0], "t1": t1, "cpu": cpu}), flush=True)


async def _until_sigterm(work: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work())
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def python_worker(module: str) -> list[str]:
    """The worker command of a peer whose worker is this harness's `--role worker`."""
    return [sys.executable, "-m", module, "--role", "worker"]


def main(spec: PeerSpec, argv: list[str] | None = None) -> None:
    """Command line of a peer module: orchestrate (default), or play the producer role."""
    parser = argparse.ArgumentParser(prog=f"python -m {spec.module}", description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["run", "producer", "worker"], default="run")
    parser.add_argument("--tasks", type=int, default=20_000, help="number of no-op tasks (default 20000)")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="asyncio submissions in flight")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before the run is abandoned")
    args = parser.parse_args(argv)
    if args.role == "producer":
        _produce(spec)
        return
    if args.role == "worker":
        if spec.work is None:
            parser.error(f"{spec.name} runs its worker through its own command: {spec.worker_argv()}")
        use_uvloop()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_until_sigterm(spec.work))
        return
    print(json.dumps(run_peer(spec, tasks=args.tasks, window=args.window, timeout=args.timeout)), flush=True)
