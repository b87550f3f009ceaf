"""hulk's HTTP layer against a bare Starlette app, with wrk at 64 connections, in the same run.

    .venv/bin/python -m bench.http_compare --duration 10s --repeats 3

Starts `hulk serve` (embedded defaults, every middleware) and bench/bare_app.py (the same JSON under
uvicorn with uvloop and httptools, no middleware) on free ports, warms both up, then alternates wrk
runs against them: `GET /health` and `POST /v1/tasks` (hulk validates and durably enqueues the task
on JetStream; the bare app only parses the JSON). Each figure is the median of the runs, with min–max.
The target: hulk's /health at ≥ 80% of the bare app's req/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import WRK_SCRIPTS, parse_duration, run_wrk
from bench.service import Service, hulk_serve_missing

ROUTES = ("health", "submit")


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(duration: float, repeats: int, connections: int, threads: int) -> dict[str, Any]:
    """Runs the comparison; returns the figures."""
    missing = hulk_serve_missing()
    if missing:
        return {"skipped": missing}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {r: [] for r in ROUTES} for s in ("bare", "hulk")}
    commands: dict[str, str] = {}
    services = {"bare": Service("bare"), "hulk": Service("hulk")}
    try:
        for svc in services.values():
            svc.start()
        for svc in services.values():  # warm-up, not recorded
            run_wrk("health", svc.url, 2, connections, threads)
        for r in range(repeats):
            order = ("bare", "hulk") if r % 2 == 0 else ("hulk", "bare")
            for route in ROUTES:
                for side in order:
                    cmd, figures, _ = run_wrk(route, services[side].url, duration, connections, threads)
                    commands[route] = " ".join(cmd)
                    runs[side][route].append(figures)
    finally:
        exits = {side: svc.stop() for side, svc in services.items()}
    out: dict[str, Any] = {
        "connections": connections,
        "threads": threads,
        "duration": f"{int(duration)}s",
        "repeats": repeats,
        "wrk_commands": commands,
        "service_commands": {s: " ".join(svc.argv) for s, svc in services.items()},
        "service_exits": exits,
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for side in ("bare", "hulk"):
        out[side] = {}
        for route in ROUTES:
            xs = runs[side][route]
            out[side][route] = {
                "route": ("GET " if route == "health" else "POST ") + WRK_SCRIPTS[route][1],
                "rps": _spread([x["rps"] for x in xs]),
                "p50_ms": _spread([x["latency_ms"]["p50"] for x in xs]),
                "p95_ms": _spread([x["latency_ms"]["p95"] for x in xs]),
                "p99_ms": _spread([x["latency_ms"]["p99"] for x in xs]),
                "errors": sum(x["errors"] for x in xs),
            }
    for route in ROUTES:
        ratios = [
            h["rps"] / b["rps"] for h, b in zip(runs["hulk"][route], runs["bare"][route], strict=True) if b["rps"]
        ]
        if ratios:
            out[f"{route}_ratio"] = _spread(ratios)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=parse_duration, default=10.0, help="per wrk run (default 10s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        result = compare(args.duration, args.repeats, args.connections, args.threads)
    except RuntimeError as exc:
        result = {"error": str(exc)[-3000:]}
    if args.json:
        print(json.dumps(result), flush=True)
        return 0 if "error" not in result else 1
    if "hulk" not in result:
        print(f"not run: {result.get('skipped') or result.get('error')}")
        return 0 if "skipped" in result else 1
    for route in ROUTES:
        b, h = result["bare"][route], result["hulk"][route]
        print(f"{h['route']}: bare {b['rps']['median']:,.0f} req/s, hulk {h['rps']['median']:,.0f} req/s", end="")
        ratio = result.get(f"{route}_ratio")
        print(f" ({100 * ratio['median']:.0f}%)" if ratio else "")
        print(
            "  p50/p95/p99 ms  "
            + "  ".join(
                f"{side} " + "/".join(f"{m[q]['median']:.2f}" for q in ("p50_ms", "p95_ms", "p99_ms"))
                for side, m in (("bare", b), ("hulk", h))
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
