"""Every benchmark of hulk in one command: writes bench/RESULTS.md, bench/results.json and bench/charts/*.png.

Run: `make bench` (the same as `.venv/bin/python bench/run_all.py`). Options:

    --quick          small sizes, one repeat: a smoke run (written to /tmp/hulk-bench-quick unless --out)
    --only G[,G]     run only these groups (the others keep their last figures in results.json)
    --repeats N      runs of each peer and HTTP measurement (default 3); figures are medians, min–max
    --out DIR        where RESULTS.md, results.json and charts/ go (default: bench/)

Groups, in run order: native (pytest-benchmark files of the native core), engine, cache, nats (the
messaging layer's own benchmark), peers (hulk against raw nats-py, FastStream, Taskiq, arq, Dramatiq
and Celery), http (hulk vs a bare Starlette app under wrk, and k6 at a constant rate), cold_start,
scaling (1, 2 and 4 instances on one JetStream; latency against queue depth). A group whose files or
command are not there yet is reported as skipped, with the reason.

Every figure is stored with the exact command that produced it. The run refuses a debug build.
The whole run stays under 15 minutes on the 2-core machine (each step has its own time limit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable

GROUPS = ("native", "engine", "cache", "nats", "peers", "http", "cold_start", "scaling")

# pytest-benchmark files per group (run when present).
PYTEST_FILES: dict[str, tuple[str, ...]] = {
    "native": ("bench_queue.py", "bench_breaker.py", "bench_backoff.py"),
    "engine": ("bench_engine.py",),
    "cache": ("bench_cache.py", "bench_cache_multilevel.py"),
    "nats": ("bench_nats_e2e.py",),
}

# Environment per pytest-benchmark file: sizes that keep the whole run under 15 minutes (full, quick).
PYTEST_ENV: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "bench_nats_e2e.py": ({"BENCH_NATS_TASKS": "10000"}, {"BENCH_NATS_TASKS": "2000"}),
}

# Peers: (name, module, tasks in a full run). Sizes aim at a few seconds per run on this machine.
PEERS: tuple[tuple[str, str, int], ...] = (
    ("hulk", "bench.peers.hulk_peer", 10_000),
    ("hulk-bulk", "bench.peers.hulk_bulk_peer", 20_000),
    ("raw-nats", "bench.peers.raw_nats", 10_000),
    ("faststream", "bench.peers.faststream_peer", 6_000),
    ("taskiq", "bench.peers.taskiq_peer", 6_000),
    ("arq", "bench.peers.arq_peer", 2_000),
    ("dramatiq", "bench.peers.dramatiq_peer", 6_000),
    ("celery", "bench.peers.celery_peer", 1_500),
)

# Durable end-to-end targets: hulk's tasks/s at least this multiple of the peer's, in one run.
# The whole run stays under 15 minutes: a group that would start after this many seconds is skipped.
BUDGET_S = 13.5 * 60

PEER_TARGETS: dict[str, float] = {"raw-nats": 0.8, "faststream": 1.5, "taskiq": 2.5, "celery": 10.0}
# The bulk path (many tasks per message) against raw nats-py's per-message figure, in the same run.
BULK_TARGET = 2.0


@dataclass
class Context:
    """What every group needs: sizes, repeats, scratch and output directories."""

    quick: bool
    repeats: int
    tmp: Path
    out: Path
    log: Callable[[str], None]


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), path]))}


def _run(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**_env(), **(env or {})}
    return subprocess.run(
        list(cmd), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _shown(cmd: Sequence[str]) -> str:
    """The command as a reader would type it from the repository root."""
    shown = [".venv/bin/python" if part == PY else part for part in cmd]
    shown = [part.replace(str(REPO) + "/", "") for part in shown]
    return shlex.join(shown).replace(str(REPO) + "/", "")


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# -- pytest-benchmark files ---------------------------------------------------------------------


def _pytest_file(ctx: Context, name: str) -> dict[str, Any]:
    path = HERE / name
    shown = [PY, "-m", "pytest", f"bench/{name}", "--benchmark-only", "-q"]
    if not path.exists():
        return {"file": name, "skipped": f"bench/{name} is not in this tree yet", "command": _shown(shown)}
    out = ctx.tmp / f"{path.stem}.json"
    options = (
        ["--benchmark-max-time=0.05", "--benchmark-min-rounds=3", "--benchmark-warmup=off"]
        if ctx.quick
        else ["--benchmark-max-time=0.5", "--benchmark-min-rounds=5"]
    )
    cmd = [*shown, *options, "-p", "no:cacheprovider", f"--benchmark-json={out}"]
    env = PYTEST_ENV.get(name, ({}, {}))[1 if ctx.quick else 0]
    started = time.monotonic()
    ctx.log(f"pytest {name}")
    proc = _run(cmd, timeout=420, env=env)
    entry: dict[str, Any] = {
        "file": name,
        "command": " ".join([*(f"{k}={v}" for k, v in env.items()), _shown([*shown, *options])]),
        "seconds": round(time.monotonic() - started, 1),
    }
    if proc.returncode != 0 or not out.exists():
        entry["error"] = f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}"
        return entry
    data = json.loads(out.read_text())
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        s = b["stats"]
        groups.setdefault(b["group"] or b["name"], []).append(
            {
                "name": b["name"],
                "median_s": s["median"],
                "min_s": s["min"],
                "max_s": s["max"],
                "mean_s": s["mean"],
                "rounds": s["rounds"],
                "extra": b.get("extra_info") or {},
            }
        )
    entry["groups"] = [{"group": g, "rows": _with_ratios(rows)} for g, rows in groups.items()]
    return entry


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds `vs_hulk`: each row's median over the first hulk row's (>1: hulk is that many times faster)."""
    ref = next((r for r in rows if "hulk" in r["name"]), None) or min(rows, key=lambda r: r["median_s"])
    for r in rows:
        r["vs_ref"] = r["median_s"] / ref["median_s"] if ref["median_s"] else None
        r["ref"] = ref["name"]
    return rows


def group_pytest(ctx: Context, group: str) -> dict[str, Any]:
    files = [_pytest_file(ctx, name) for name in PYTEST_FILES[group]]
    extra: list[dict[str, Any]] = []
    if group == "cache":
        extra.append(_hit_ratio(ctx))
    return {"files": files, "scripts": extra}


def _hit_ratio(ctx: Context) -> dict[str, Any]:
    script = HERE / "cache_hit_ratio.py"
    cmd = [PY, "bench/cache_hit_ratio.py", "--out", "-"]
    if not script.exists():
        return {"script": "cache_hit_ratio.py", "skipped": "not in this tree yet", "command": _shown(cmd)}
    if ctx.quick:
        cmd += ["--keys", "100000", "--requests", "200000", "--capacity", "1000"]
    proc = _run(cmd, timeout=300)
    return {
        "script": "cache_hit_ratio.py",
        "command": _shown(cmd),
        "exit": proc.returncode,
        "output": _plain(proc.stdout),
        **({"error": proc.stderr[-2000:]} if proc.returncode not in (0, 1) else {}),
    }


def _plain(markdown: str) -> str:
    """A script's markdown output, fit to sit under a heading of RESULTS.md (no markers, no headings)."""
    lines = []
    for line in markdown.strip().splitlines():
        if line.startswith("<!--"):
            continue
        lines.append(f"**{line.lstrip('#').strip()}**" if line.startswith("#") else line)
    return "\n".join(lines)


# -- peers ----------------------------------------------------------------------------------------


def _peer_python(name: str) -> str:
    """The interpreter a peer runs under: the project's, or the peer's own venv (arq)."""
    if name == "arq":
        from bench.peers.venvs import arq_python

        return arq_python()
    return PY


def group_peers(ctx: Context) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in PEERS}
    errors: dict[str, str] = {}
    commands: dict[str, str] = {}
    # Round-robin over the peers, so a burst of noise from the machine spreads over all of them.
    for r in range(ctx.repeats):
        for name, module, tasks in PEERS:
            if name in errors:
                continue
            n = max(500, tasks // 10) if ctx.quick else tasks
            try:
                python = _peer_python(name)
            except (OSError, subprocess.CalledProcessError) as exc:
                errors[name] = f"no interpreter for {name}: {exc}"
                continue
            cmd = [python, "-m", module, "--tasks", str(n), "--timeout", "120"]
            commands[name] = _shown(cmd)
            ctx.log(f"peers: {name} run {r + 1}/{ctx.repeats} ({n} tasks)")
            try:
                proc = _run(cmd, timeout=200)
            except subprocess.TimeoutExpired:
                errors[name] = "timed out after 200 s"
                continue
            result = _last_json(proc.stdout)
            if proc.returncode != 0 or result is None:
                errors[name] = f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"
                continue
            runs[name].append(result)
    peers: dict[str, Any] = {}
    for name, results in runs.items():
        if not results:
            continue
        first = results[0]
        peers[name] = {
            "tasks_per_s": _spread([x["tasks_per_s"] for x in results]),
            "submit_per_s": _spread([x["submit_per_s"] for x in results]),
            "worker_cpu_ms_per_1k": statistics.median(x["worker_cpu_s"] * 1e6 / x["tasks"] for x in results),
            "server_cpu_ms_per_1k": statistics.median(x.get("server_cpu_s", 0) * 1e6 / x["tasks"] for x in results),
            "tasks": first["tasks"],
            "command": commands[name],
            "config": first["config"],
            "durable": first["durable"],
            "notes": first.get("notes", []),
            "versions": first["versions"],
            "server": first["server"],
            "worker_command": _shown(first["worker_command"].split()),
        }
    ratios: dict[str, Any] = {}
    if "hulk" in peers:
        hulk = peers["hulk"]["tasks_per_s"]["median"]
        for name, p in peers.items():
            if name == "hulk":
                continue
            ratio = hulk / p["tasks_per_s"]["median"]
            target = PEER_TARGETS.get(name)
            ratios[name] = {"ratio": ratio, "target": target, "met": None if target is None else ratio >= target}
    bulk: dict[str, Any] = {}
    if "hulk-bulk" in peers and "raw-nats" in peers:
        ratio = peers["hulk-bulk"]["tasks_per_s"]["median"] / peers["raw-nats"]["tasks_per_s"]["median"]
        bulk = {"ratio": ratio, "target": BULK_TARGET, "met": ratio >= BULK_TARGET}
    return {"peers": peers, "ratios": ratios, "bulk": bulk, "errors": errors, "repeats": ctx.repeats}


# -- scripts with a JSON line (http, cold start, scaling) ---------------------------------------------


def _script(ctx: Context, what: str, cmd: list[str], timeout: float) -> dict[str, Any]:
    ctx.log(f"{what}: {_shown(cmd)}")
    try:
        proc = _run(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"command": _shown(cmd), "error": f"timed out after {timeout:.0f} s"}
    result = _last_json(proc.stdout)
    if result is None:
        return {"command": _shown(cmd), "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
    if result.get("skipped"):
        return {"command": _shown(cmd), "skipped": result["skipped"]}
    if result.get("error"):
        return {"command": _shown(cmd), "error": result["error"]}
    return {"command": _shown(cmd), "exit": proc.returncode, "result": result}


def group_http(ctx: Context) -> dict[str, Any]:
    duration = "3s" if ctx.quick else "8s"
    compare = [PY, "-m", "bench.http_compare", "--duration", duration, "--repeats", str(ctx.repeats), "--json"]
    load_duration = "5s" if ctx.quick else "15s"
    submit = [PY, "-m", "bench.load", "--suite", "submit", "--rate", "2000", "--duration", load_duration, "--json"]
    return {
        "compare": _script(ctx, "http compare", compare, 240 if not ctx.quick else 90),
        "submit_2000": _script(ctx, "k6 submit at 2,000 req/s", submit, 180),
    }


def group_cold_start(ctx: Context) -> dict[str, Any]:
    repeats = 2 if ctx.quick else 3
    return _script(ctx, "cold start", [PY, "-m", "bench.cold_start", "--repeats", str(repeats), "--json"], 180)


def group_scaling(ctx: Context) -> dict[str, Any]:
    cmd = [PY, "-m", "bench.scaling", "--json"] + (["--quick"] if ctx.quick else [])
    return _script(ctx, "scaling", cmd, 300)


# -- machine and versions --------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str:
    exe = shutil.which(cmd[0], path=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        return "not installed"
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _version_token(line: str) -> str:
    """'Redis server v=7.0.15 sha=…' → '7.0.15'; the line itself when no version shows."""
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", line)
    return match.group(1) if match else line


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
    }


def versions() -> dict[str, str]:
    import hulk._native as native

    out = {
        "python": platform.python_version(),
        "hulk": native.__version__,
        "hulk._native build": native.build_profile,
        "nats-server": _version_token(_first_line(["nats-server", "--version"])),
        "redis-server": _version_token(_first_line(["redis-server", "--version"])),
        "wrk": _version_token(_first_line(["wrk", "--version"])),
        "k6": _version_token(_first_line(["k6", "version"])),
    }
    for dist in ("nats-py", "uvloop", "starlette", "uvicorn", "pytest-benchmark"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# -- main -------------------------------------------------------------------------------------------


def _refuse_debug() -> None:
    import hulk._native as native

    if native.build_profile != "release":
        sys.exit("bench/run_all.py refuses a debug build of hulk._native: run `make build-dev` (release) first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat: a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated groups among {', '.join(GROUPS)}")
    parser.add_argument("--repeats", type=int, default=None, help="runs per peer / HTTP measurement (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default bench/)")
    args = parser.parse_args(argv)
    _refuse_debug()
    only = [g.strip() for g in args.only.split(",") if g.strip()] or list(GROUPS)
    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; groups are {', '.join(GROUPS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    out: Path = args.out or (Path(tempfile.gettempdir()) / "hulk-bench-quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    previous: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    command = _shown([PY, "bench/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    results: dict[str, Any] = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "load_average_start": list(os.getloadavg()),
        "groups": dict(previous.get("groups", {})),
    }
    with tempfile.TemporaryDirectory(prefix="hulk-bench-") as tmp:
        ctx = Context(quick=args.quick, repeats=repeats, tmp=Path(tmp), out=out, log=log)
        for group in GROUPS:
            if group not in only:
                continue
            log(f"group {group}")
            t0 = time.monotonic()
            if t0 - started > BUDGET_S:
                results["groups"][group] = {
                    "skipped": f"time budget: {t0 - started:.0f} s spent before this group (limit {BUDGET_S:.0f} s)",
                    "measured": results["generated"],
                }
                continue
            if group in PYTEST_FILES:
                data = group_pytest(ctx, group)
            elif group == "peers":
                data = group_peers(ctx)
            elif group == "http":
                data = group_http(ctx)
            elif group == "cold_start":
                data = group_cold_start(ctx)
            else:
                data = group_scaling(ctx)
            data["measured"] = results["generated"]
            data["run_command"] = command
            data["seconds"] = round(time.monotonic() - t0, 1)
            results["groups"][group] = data
            # Written after every group: an interrupted run keeps what it measured.
            json_path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    results["load_average_end"] = list(os.getloadavg())
    results["seconds"] = round(time.monotonic() - started, 1)
    json_path.write_text(json.dumps(results, indent=2) + "\n")

    from bench.report import render

    render(results, out)
    log(f"done in {results['seconds']:.0f} s: {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(REPO))
    sys.exit(main())
