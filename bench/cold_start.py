"""Cold start of `hulk serve`: process start → first `GET /ready` 200, embedded NATS and tracing on.

    .venv/bin/python -m bench.cold_start --repeats 5

Each start uses a fresh data directory (so the embedded nats-server creates its JetStream store and
hulk its streams from nothing) and tracing enabled (`HULK_TELEMETRY__TRACING__ENABLED=true`, the
default). The clock starts just before the process is spawned and stops at the first 200 from
/ready, polled every 5 ms. For reference, the bare Starlette app (uvicorn) is timed to its first
/health 200 the same way. The figure is the median of the starts, with min and max.
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

from bench.service import Service, hulk_serve_missing

TRACING = {"HULK_TELEMETRY__TRACING__ENABLED": "true"}


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def cold_start(repeats: int, bare: bool = True) -> dict[str, Any]:
    """Times `repeats` starts of hulk (and of the bare app); returns the figures in seconds."""
    missing = hulk_serve_missing()
    if missing:
        return {"skipped": missing}
    hulk: list[float] = []
    stops: list[float] = []
    exits: list[int | None] = []
    argv: list[str] = []
    for _ in range(repeats):
        svc = Service("hulk", env=TRACING)
        argv = svc.argv
        try:
            hulk.append(svc.start())
        finally:
            exits.append(svc.stop())
            stops.append(svc.stop_seconds)
    out: dict[str, Any] = {
        "repeats": repeats,
        "hulk": _spread(hulk),
        "hulk_stop_s": _spread(stops),
        "hulk_exits": exits,
        "service_command": " ".join(argv),
        "service_env": {**Service("hulk", env=TRACING).shown_env},
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if bare:
        times = []
        for _ in range(repeats):
            with Service("bare") as svc:
                times.append(svc.ready_after)
        out["bare"] = _spread(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Starlette reference")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        result = cold_start(args.repeats, bare=not args.no_bare)
    except RuntimeError as exc:
        result = {"error": str(exc)[-3000:]}
    if args.json:
        print(json.dumps(result), flush=True)
    elif "hulk" in result:
        h = result["hulk"]
        print(
            f"hulk serve → /ready 200: median {h['median']:.3f} s "
            f"(min {h['min']:.3f}, max {h['max']:.3f}), {args.repeats} starts"
        )
        if "bare" in result:
            b = result["bare"]
            print(f"bare Starlette → /health 200: median {b['median']:.3f} s (min {b['min']:.3f}, max {b['max']:.3f})")
    else:
        print(f"not run: {result.get('skipped') or result.get('error')}")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
