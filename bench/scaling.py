"""Scaling: throughput with 1, 2 and 4 hulk instances on one JetStream server; latency against queue depth.

    .venv/bin/python -m bench.scaling            # full sizes (about 90 s)
    .venv/bin/python -m bench.scaling --quick    # smoke sizes

Throughput: the bench starts one nats-server (JetStream, file storage) and K `hulk serve` instances
pointed at it (`HULK_NATS__EMBEDDED=false`, each on its own port and data directory, the built-in
`echo` handler, `engine.workers` as in the peer comparison), waits for every `/ready`, then the
bench submits N tasks with hulk's `TaskProducer.submit_many` (pipelined). tasks/s = N / (time the intake stream is
empty again − first submission): the stream is a work queue, so a message leaves it only when an
instance acked it after the task's terminal state. The stream is polled every 20 ms.

Latency against depth (1 instance): N_d filler tasks are submitted, the number of messages in the
stream is read (the real depth ahead), then one probe task is submitted through the HTTP API with
`?wait=60s`, which answers when the task has finished; the probe's round trip is the latency. The
bench waits for the stream to drain between probes.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers.hulk_peer import WORKERS
from bench.peers.servers import NatsServer
from bench.service import Service, hulk_serve_missing

INTAKE_STREAM = "HULK_ENGINE_TASKS"
TASK_TYPE = "echo"


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


async def _stream_messages(js: Any) -> int:
    info = await js.stream_info(INTAKE_STREAM)
    return int(info.state.messages)


async def _wait_empty(js: Any, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        if await _stream_messages(js) == 0:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the intake stream still holds tasks after {timeout:.0f}s")
        # Polls the server's count; 20 ms is the resolution of the end time.
        await asyncio.sleep(0.02)


async def _throughput_run(url: str, n: int, window: int) -> float:
    from hulk.messaging.connection import ConnectionSettings, NatsConnection
    from hulk.messaging.envelope import TaskEnvelope
    from hulk.messaging.publisher import TaskProducer

    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    try:
        producer = TaskProducer(conn)
        tasks = [TaskEnvelope(type=TASK_TYPE, payload={"n": i}) for i in range(n)]
        t0 = time.monotonic()
        await producer.submit_many(tasks, window=window)
        t_end = await _wait_empty(conn.js, 300)
        return n / (t_end - t0)
    finally:
        await conn.close()


def _request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        conn.close()


TERMINAL = {"succeeded", "dead", "cancelled"}


def _probe(port: int) -> float:
    """Seconds from POST /v1/tasks?wait=60s to the task seen finished.

    When the answer is a 202 (the service answered before its status record existed), the probe
    follows up with `GET /v1/tasks/{id}?wait=` until the task is terminal; the clock keeps running.
    """
    body = json.dumps({"type": TASK_TYPE, "payload": {"probe": True}})
    t0 = time.monotonic()
    status, view = _request(port, "POST", "/v1/tasks?wait=60s", body)
    task_id = view.get("id", "")
    while view.get("status") not in TERMINAL:
        if status not in (200, 202, 404) or time.monotonic() - t0 > 120:
            raise RuntimeError(f"probe answered {status}: {view}")
        if status == 404:
            time.sleep(0.005)  # the status record is written behind; ask again
        status, view = _request(port, "GET", f"/v1/tasks/{task_id}?wait=30s")
    return time.monotonic() - t0


async def _depth_runs(url: str, port: int, depths: list[int], probes: int) -> list[dict[str, Any]]:
    from hulk.messaging.connection import ConnectionSettings, NatsConnection
    from hulk.messaging.envelope import TaskEnvelope
    from hulk.messaging.publisher import TaskProducer

    conn = NatsConnection(ConnectionSettings(urls=(url,)))
    await conn.connect(timeout=10)
    out: list[dict[str, Any]] = []
    try:
        producer = TaskProducer(conn)
        loop = asyncio.get_running_loop()
        for depth in depths:
            latencies, ahead = [], []
            for _ in range(probes):
                if depth:
                    fillers = [TaskEnvelope(type=TASK_TYPE, payload={"f": i}) for i in range(depth)]
                    await producer.submit_many(fillers, window=1000)
                ahead.append(await _stream_messages(conn.js))
                latencies.append(await loop.run_in_executor(None, _probe, port))
                await _wait_empty(conn.js, 300)
            latencies.sort()
            out.append(
                {
                    "depth": depth,
                    "depth_seen": statistics.median(ahead),
                    "p50_ms": 1000 * statistics.median(latencies),
                    "p95_ms": 1000 * latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
                    "max_ms": 1000 * latencies[-1],
                    "probes": probes,
                }
            )
    finally:
        await conn.close()
    return out


def scaling(instances: list[int], tasks: int, repeats: int, depths: list[int], probes: int) -> dict[str, Any]:
    """Runs both measurements; returns the figures."""
    missing = hulk_serve_missing()
    if missing:
        return {"skipped": missing}
    results: list[dict[str, Any]] = []
    depth_results: list[dict[str, Any]] = []
    for k in instances:
        with NatsServer() as nats:
            env = {"HULK_NATS__URLS": nats.url, "HULK_NATS__EMBEDDED": "false", "HULK_ENGINE__WORKERS": str(WORKERS)}
            services = [Service("hulk", env=env) for _ in range(k)]
            try:
                for svc in services:
                    svc.start()
                asyncio.run(_throughput_run(nats.url, min(1000, tasks), 256))  # warm-up, not recorded
                rates = [asyncio.run(_throughput_run(nats.url, tasks, 256)) for _ in range(repeats)]
                results.append({"instances": k, "tasks": tasks, "tasks_per_s": _spread(rates)})
                if k == 1 and depths:
                    depth_results = asyncio.run(_depth_runs(nats.url, services[0].port, depths, probes))
            finally:
                for svc in services:
                    svc.stop()
    return {
        "method": (
            f"One nats-server (JetStream, file storage), K `hulk serve` instances on it, the `echo` handler; "
            f"{tasks:,} tasks submitted with TaskProducer.submit_many, tasks/s until the intake stream is empty; "
            f"median of {repeats} runs (min–max). Latency: one instance, a probe `POST /v1/tasks?wait=60s` behind "
            f"N filler tasks, {probes} probes per depth."
        ),
        "instances": results,
        "depth": depth_results,
        "service_env": {
            "HULK_NATS__URLS": "<bench nats-server>",
            "HULK_NATS__EMBEDDED": "false",
            "HULK_ENGINE__WORKERS": str(WORKERS),
        },
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    parser.add_argument("--instances", default="1,2,4")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per throughput run (default 8000)")
    parser.add_argument("--repeats", type=int, default=None, help="throughput runs per instance count (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    tasks = args.tasks or (2_000 if args.quick else 8_000)
    repeats = args.repeats or (1 if args.quick else 3)
    depths = [0, 500, 2_000] if args.quick else [0, 1_000, 2_000, 4_000]
    probes = 2 if args.quick else 3
    try:
        result = scaling([int(x) for x in args.instances.split(",")], tasks, repeats, depths, probes)
    except RuntimeError as exc:
        result = {"error": str(exc)[-3000:]}
    if args.json:
        print(json.dumps(result), flush=True)
    elif "instances" in result:
        for row in result["instances"]:
            s = row["tasks_per_s"]
            print(
                f"{row['instances']} instance(s): {s['median']:,.0f} tasks/s (min {s['min']:,.0f}, max {s['max']:,.0f})"
            )
        for d in result["depth"]:
            seen = f"(seen {d['depth_seen']:,.0f})"
            print(f"depth {d['depth']:>6,} {seen}: p50 {d['p50_ms']:.1f} ms, max {d['max_ms']:.1f} ms")
    else:
        print(f"not run: {result.get('skipped') or result.get('error')}")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
