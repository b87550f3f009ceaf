"""Renders bench/results.json into bench/RESULTS.md and the PNG charts in bench/charts/.

Called by bench/run_all.py at the end of a run; `python -m bench.report [DIR]` re-renders from the
results.json in DIR (default bench/) without measuring anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

PEER_LABELS = {
    "hulk": "hulk",
    "hulk-bulk": "hulk bulk path (100 tasks per message)",
    "raw-nats": "raw nats-py (ceiling)",
    "faststream": "FastStream",
    "taskiq": "Taskiq",
    "arq": "arq",
    "dramatiq": "Dramatiq",
    "celery": "Celery",
}
HULK_COLOR, PEER_COLOR, BASE_COLOR = "#c0392b", "#7f8c8d", "#2c3e50"


def _t(seconds: float) -> str:
    """A duration with a readable unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:,.2f} {unit}"
    return f"{seconds / 1e-9:,.1f} ns"


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _spread(s: dict[str, float], digits: int = 0) -> str:
    return f"{_n(s['median'], digits)} ({_n(s['min'], digits)}–{_n(s['max'], digits)})"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _reason(text: str) -> str:
    """The line of an error that says what went wrong (a traceback's last line)."""
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:240] if lines else "?"


def _met(flag: bool | None) -> str:
    return "—" if flag is None else ("**met**" if flag else "**not met**")


# -- targets ------------------------------------------------------------------------------------------


def _targets(results: dict[str, Any]) -> list[list[str]]:
    groups = results.get("groups", {})
    rows: list[list[str]] = []
    peers = groups.get("peers", {})
    for name, r in peers.get("ratios", {}).items():
        if r.get("target") is None:
            continue
        rows.append(
            [
                f"durable end-to-end: hulk ≥ {r['target']:g}× {PEER_LABELS.get(name, name)}",
                f"{r['ratio']:.2f}×",
                _met(r["met"]),
            ]
        )
    bulk = peers.get("bulk") or {}
    if bulk:
        rows.append(
            [
                f"bulk path: hulk (100 tasks per message) ≥ {bulk['target']:g}× raw nats-py per message",
                f"{bulk['ratio']:.2f}×",
                _met(bulk["met"]),
            ]
        )
    if peers and "hulk" not in peers.get("peers", {}):
        why = peers.get("errors", {}).get("hulk", "hulk's peer module did not run")
        rows.append(["durable end-to-end vs peers", f"not measured: {_reason(why)}", "—"])
    http = groups.get("http", {})
    submit = http.get("submit_2000", {}).get("result")
    if submit and "rps" in submit:
        p95 = submit["latency_ms"]["p95"]
        rows.append(
            [
                "POST /v1/tasks p95 < 10 ms at a constant 2,000 req/s (k6)",
                f"p95 {p95:.2f} ms at {submit['rps']:,.0f} req/s achieved, {submit['errors']} errors",
                _met(p95 < 10 and submit["rps"] >= 1900),
            ]
        )
    compare = http.get("compare", {}).get("result")
    if compare and "health_ratio" in compare:
        ratio = compare["health_ratio"]["median"]
        rows.append(
            [
                "GET /health, every middleware, ≥ 80% of bare Starlette's req/s at 64 connections (wrk)",
                f"{100 * ratio:.0f}% ({_n(compare['hulk']['health']['rps']['median'])} vs "
                f"{_n(compare['bare']['health']['rps']['median'])} req/s)",
                _met(ratio >= 0.8),
            ]
        )
    soak_path = HERE / "results" / "soak.json"
    if soak_path.exists():
        soak = json.loads(soak_path.read_text())
        growth = soak.get("memory", {}).get("growth_pct")
        if growth is not None and "rps" in soak:
            ok = growth < 10 and soak.get("errors", 1) == 0
            latency = "held" if soak.get("tool_exit") == 0 else "failed"
            p95 = soak["latency_ms"]["p95"]
            rows.append(
                [
                    "soak, 10 minutes at half of peak: RSS growth < 10% after warm-up, no error",
                    f"{soak['duration']} at {soak['rate']} req/s: RSS {growth:+.1f}% after warm-up, "
                    f"{soak['errors']} errors (k6's latency thresholds {latency}: p95 {p95:.0f} ms)",
                    _met(ok),
                ]
            )
    return rows


# -- sections --------------------------------------------------------------------------------------------


def _peers_section(g: dict[str, Any]) -> list[str]:
    out = ["## Durable end-to-end against peers", ""]
    out.append(
        "Each run: a fresh server on free ports, one worker process, one producer process submitting N no-op "
        "tasks while the worker runs them; tasks/s = N / (end − first submission), where the end is the last "
        "execution or, on NATS, the moment no message is left unacknowledged, whichever is later. "
        f"Median of {g.get('repeats', '?')} runs (min–max), peers run round-robin. Measured {g.get('measured', '?')}."
    )
    out.append("")
    out.append("![end-to-end throughput](charts/peers_throughput.png)")
    out.append("")
    peers: dict[str, Any] = g.get("peers", {})
    ratios: dict[str, Any] = g.get("ratios", {})
    rows = []
    for name, p in sorted(peers.items(), key=lambda kv: -kv[1]["tasks_per_s"]["median"]):
        ratio = "1.00×" if name == "hulk" else (f"{ratios[name]['ratio']:.2f}×" if name in ratios else "—")
        rows.append(
            [
                PEER_LABELS.get(name, name),
                _spread(p["tasks_per_s"]),
                ratio,
                _n(p["submit_per_s"]["median"]),
                _n(p["worker_cpu_ms_per_1k"]),
                _n(p["server_cpu_ms_per_1k"]) if "server_cpu_ms_per_1k" in p else "—",
                _n(p["tasks"]),
            ]
        )
    out += _table(
        [
            "runtime",
            "tasks/s median (min–max)",
            "hulk ÷ peer",
            "submit/s",
            "worker CPU ms / 1k tasks",
            "server CPU ms / 1k tasks",
            "N",
        ],
        rows,
    )
    out.append("")
    for name, err in g.get("errors", {}).items():
        out.append(f"- **{PEER_LABELS.get(name, name)}** did not run: `{_reason(err)}`")
    if g.get("errors"):
        out.append("")
    out.append("### How each runtime was configured")
    out.append("")
    for name, p in peers.items():
        versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
        out.append(f"**{PEER_LABELS.get(name, name)}** ({versions}; {p['server']['version']})")
        out.append("")
        for key, value in p["config"].items():
            out.append(f"- {key}: {value}")
        out.append(f"- durability: {p['durable']}")
        for note in p.get("notes", []):
            out.append(f"- note: {note}")
        out.append(f"- command: `{p['command']}` (worker: `{p['worker_command']}`)")
        out.append("")
    return out


def _http_section(g: dict[str, Any]) -> list[str]:
    out = ["## HTTP", "", f"Measured {g.get('measured', '?')}.", ""]
    compare = g.get("compare", {})
    if "hulk" in compare.get("result", {}):
        c = compare["result"]
        out.append(
            f"wrk, {c['connections']} connections, {c['threads']} threads, {c['duration']} per run, "
            f"{c['repeats']} runs each, alternating hulk and the bare Starlette app (bench/bare_app.py, same "
            "uvicorn settings); median (min–max)."
        )
        out.append("")
        out.append("![HTTP throughput](charts/http_throughput.png) ![HTTP latency](charts/http_latency.png)")
        out.append("")
        rows = []
        for route in ("health", "submit"):
            for side in ("bare", "hulk"):
                m = c[side].get(route)
                if not m:
                    continue
                rows.append(
                    [
                        f"{side} {m['route']}",
                        _spread(m["rps"]),
                        _n(m["p50_ms"]["median"], 2),
                        _n(m["p95_ms"]["median"], 2),
                        _n(m["p99_ms"]["median"], 2),
                        _n(m["errors"]),
                    ]
                )
        out += _table(["server, route", "req/s median (min–max)", "p50 ms", "p95 ms", "p99 ms", "errors"], rows)
        out.append("")
        if "health_ratio" in c:
            out.append(f"GET /health: hulk at {100 * c['health_ratio']['median']:.0f}% of the bare app's req/s.")
        if "submit_ratio" in c:
            out.append(
                f"POST /v1/tasks: hulk at {100 * c['submit_ratio']['median']:.0f}% of the bare app's req/s "
                "(the bare app only parses the JSON; hulk validates and durably enqueues on JetStream)."
            )
        out.append("")
        out.append(f"Command: `{compare['command']}`")
        out.append("")
    else:
        out += _skip(compare, "hulk vs bare Starlette")
    submit = g.get("submit_2000", {})
    if "rps" in submit.get("result", {}):
        s = submit["result"]
        lat = s["latency_ms"]
        out.append(
            f"k6 `{s['suite']}` at a constant {s['rate']:,} req/s for {s['duration']}: {s['rps']:,.0f} req/s achieved, "
            f"p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms, {s['errors']} errors; "
            f"k6 thresholds {'passed' if s['tool_exit'] == 0 else 'failed'}; service RSS "
            f"{s['memory']['start_mib']:.0f} → {s['memory']['end_mib']:.0f} MiB."
        )
        out.append("")
        out.append(f"Command: `{submit['command']}`")
        out.append("")
    else:
        out += _skip(submit, "k6 submit at 2,000 req/s")
    return out


def _skip(entry: dict[str, Any], what: str) -> list[str]:
    if not entry:
        return []
    why = entry.get("skipped") or entry.get("error") or "no result"
    return [
        f"{what}: not measured — `{_reason(why)}`",
        "",
        f"Command: `{entry.get('command', '?')}`",
        "",
    ]


def _soak_section() -> list[str]:
    path = HERE / "results" / "soak.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    if "rps" not in r:
        return []
    lat, mem = r["latency_ms"], r["memory"]
    out = ["## Soak", ""]
    out.append(
        f"Run on its own (it takes {r['duration']}), measured {r.get('measured', '?')}: k6 `{r['suite']}` at "
        f"{r['rate']:,} req/s, half of the {r['peak_rps_for_auto_rate'] or 0:,.0f} req/s peak of POST /v1/tasks "
        f"measured with wrk just before. {r['requests']:,} requests, {r['rps']:,.0f} req/s achieved, {r['errors']} "
        f"errors, p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms; k6 thresholds "
        f"{'held' if r['tool_exit'] == 0 else 'failed'}."
    )
    out.append("")
    out.append(
        f"Service RSS (the hulk process, sampled every second): {mem['start_mib']} MiB at start, "
        f"{mem['warm_mib']} MiB after the {r['memory_warmup_s']:.0f} s warm-up, {mem['end_mib']} MiB at the end "
        f"(**{mem['growth_pct']:+.1f}%** after warm-up), peak {mem['peak_mib']} MiB; with the embedded "
        f"nats-server {mem['tree_end_mib']} MiB at the end. Stopped by SIGTERM in {r['service_stop_s']} s, "
        f"exit {r['service_exit']}."
    )
    out += ["", f"Command: `{r['command']}`", ""]
    return out


def _cold_section(g: dict[str, Any]) -> list[str]:
    out = ["## Cold start", ""]
    if not g.get("result"):
        return out + _skip(g, "cold start")
    r = g["result"]
    out.append(
        f"Process start → first `GET /ready` 200, embedded NATS (fresh data directory each time) and tracing on; "
        f"{r['repeats']} starts. Measured {g.get('measured', '?')}."
    )
    out.append("")
    rows = [["hulk serve", _t(r["hulk"]["median"]), _t(r["hulk"]["min"]), _t(r["hulk"]["max"])]]
    if r.get("bare"):
        rows.append(
            ["bare Starlette (uvicorn) → /health", _t(r["bare"]["median"]), _t(r["bare"]["min"]), _t(r["bare"]["max"])]
        )
    out += _table(["process", "median", "min", "max"], rows)
    out += ["", f"Command: `{g['command']}`", ""]
    return out


def _scaling_section(g: dict[str, Any]) -> list[str]:
    out = ["## Scaling", ""]
    if not g.get("result"):
        return out + _skip(g, "scaling")
    r = g["result"]
    out.append(r.get("method", ""))
    out.append("")
    out.append("![scaling](charts/scaling.png)")
    out.append("")
    rows = [
        [
            str(i["instances"]),
            _spread(i["tasks_per_s"]),
            f"{i['tasks_per_s']['median'] / r['instances'][0]['tasks_per_s']['median']:.2f}×",
        ]
        for i in r["instances"]
    ]
    out += _table(["instances", "tasks/s median (min–max)", "vs 1 instance"], rows)
    out.append("")
    if r.get("depth"):
        rows = [[_n(d["depth"]), _n(d["p50_ms"], 1), _n(d["p95_ms"], 1), _n(d["max_ms"], 1)] for d in r["depth"]]
        out += _table(["queue depth ahead", "p50 ms", "p95 ms", "max ms"], rows)
        out.append("")
    out += [f"Command: `{g['command']}`", ""]
    return out


def _pytest_section(title: str, g: dict[str, Any]) -> list[str]:
    out = [
        f"## {title}",
        "",
        f"Measured {g.get('measured', '?')}. Times are per round; ratio = row median ÷ reference median.",
        "",
    ]
    for f in g.get("files", []):
        out.append(f"### bench/{f['file']}")
        out.append("")
        if f.get("skipped") or f.get("error"):
            out += _skip(f, f["file"])
            continue
        for grp in f["groups"]:
            out.append(f"**{grp['group']}** (reference: `{grp['rows'][0]['ref']}`)")
            out.append("")
            rows = [
                [
                    f"`{r['name']}`",
                    _t(r["median_s"]),
                    f"{_t(r['min_s'])}–{_t(r['max_s'])}",
                    str(r["rounds"]),
                    f"{r['vs_ref']:.2f}" if r.get("vs_ref") is not None else "—",
                ]
                for r in sorted(grp["rows"], key=lambda r: r["median_s"])
            ]
            out += _table(["benchmark", "median", "min–max", "rounds", "ratio"], rows)
            extras = [(r["name"], r["extra"]) for r in grp["rows"] if r.get("extra")]
            if extras:
                out.append("")
            for name, extra in extras:
                shown = ", ".join(f"{k} = {v:,.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in extra.items())
                out.append(f"- `{name}`: {shown}")
            out.append("")
        out += [f"Command: `{f['command']}`", ""]
    for s in g.get("scripts", []):
        out.append(f"### bench/{s['script']}")
        out.append("")
        if s.get("skipped"):
            out += _skip(s, s["script"])
            continue
        out.append(s.get("output", ""))
        out += ["", f"Command: `{s['command']}` (exit {s.get('exit')})", ""]
    return out


def render_markdown(results: dict[str, Any]) -> str:
    """RESULTS.md from the results dict."""
    m, v = results["machine"], results["versions"]
    lines = ["# hulk benchmark results", ""]
    if results.get("quick"):
        lines += ["> **Quick run** (small sizes, one repeat): a smoke test, not figures to quote.", ""]
    lines.append(
        "Written by `bench/run_all.py` from `bench/results.json` (every figure below also carries the command "
        "that produced it). Honest numbers from real runs on the machine below; nothing is edited by hand."
    )
    lines.append("")
    lines.append(f"- Last run: {results['generated']}, `{results['command']}`, {results.get('seconds', '?')} s")
    lines.append(
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']} "
        f"(load average {', '.join(f'{x:.1f}' for x in results.get('load_average_start', []))} at the start: "
        "the machine is shared with other work, so medians over repeated runs and min–max are given)"
    )
    lines.append("- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    lines.append("")
    targets = _targets(results)
    if targets:
        lines += ["## Targets", ""]
        lines += _table(["target", "measured", ""], targets, "lll")
        lines.append("")
    groups = results.get("groups", {})
    sections: list[tuple[str, str, Any]] = [
        ("peers", "Durable end-to-end against peers", _peers_section),
        ("http", "HTTP", _http_section),
        ("cold_start", "Cold start", _cold_section),
        ("scaling", "Scaling", _scaling_section),
        ("native", "Native core", None),
        ("engine", "Engine", None),
        ("cache", "Cache", None),
        ("nats", "NATS messaging", None),
    ]
    for key, title, render_section in sections:
        if key not in groups:
            continue
        g = groups[key]
        if g.get("skipped"):
            lines += [f"## {title}", "", f"Not measured in the last run: {g['skipped']}.", ""]
        elif render_section is None:
            lines += _pytest_section(title, g)
        else:
            lines += render_section(g)
        if key == "http":
            lines += _soak_section()
    return "\n".join(lines).rstrip() + "\n"


# -- charts ----------------------------------------------------------------------------------------------


def render_charts(results: dict[str, Any], charts: Path) -> list[Path]:
    """Writes the PNG charts; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups = results.get("groups", {})
    stamp = f"{results['machine']['cores']} cores, {results['generated']}"

    peers: dict[str, Any] = groups.get("peers", {}).get("peers", {})
    if peers:
        items = sorted(peers.items(), key=lambda kv: kv[1]["tasks_per_s"]["median"])
        labels = [PEER_LABELS.get(k, k) for k, _ in items]
        med = [p["tasks_per_s"]["median"] for _, p in items]
        lo = [p["tasks_per_s"]["median"] - p["tasks_per_s"]["min"] for _, p in items]
        hi = [p["tasks_per_s"]["max"] - p["tasks_per_s"]["median"] for _, p in items]
        colors = [
            HULK_COLOR if k.startswith("hulk") else (BASE_COLOR if k == "raw-nats" else PEER_COLOR) for k, _ in items
        ]
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(items) + 1.5))
        ax.barh(labels, med, xerr=[lo, hi], color=colors, capsize=3)
        for y, (x, (_, p)) in enumerate(zip(med, items, strict=True)):
            ax.text(p["tasks_per_s"]["max"], y, f"  {x:,.0f}", va="center", fontsize=8)
        ax.set_xlabel("tasks/s, producer and worker running together (median, min–max)")
        ax.set_title(f"Durable end-to-end throughput, no-op tasks ({stamp})", fontsize=10)
        ax.set_xlim(0, max(p["tasks_per_s"]["max"] for _, p in items) * 1.2)
        fig.tight_layout()
        written.append(_save(fig, charts / "peers_throughput.png"))
        plt.close(fig)

    compare = groups.get("http", {}).get("compare", {}).get("result")
    if compare and "hulk" in compare:
        routes = [r for r in ("health", "submit") if compare["hulk"].get(r) and compare["bare"].get(r)]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.38
        for i, side in enumerate(("bare", "hulk")):
            vals = [compare[side][r]["rps"]["median"] for r in routes]
            xs = [j + (i - 0.5) * width for j in range(len(routes))]
            ax.bar(
                xs,
                vals,
                width,
                label="bare Starlette" if side == "bare" else "hulk",
                color=BASE_COLOR if side == "bare" else HULK_COLOR,
            )
        ax.set_xticks(range(len(routes)), [compare["hulk"][r]["route"] for r in routes])
        ax.set_ylabel("req/s (median)")
        ax.set_title(f"HTTP throughput, wrk {compare['connections']} connections ({stamp})", fontsize=9)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, charts / "http_throughput.png"))
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 3.5))
        lat_labels: list[str] = []
        series: dict[str, list[float]] = {"p50": [], "p95": [], "p99": []}
        for r in routes:
            for side in ("bare", "hulk"):
                lat_labels.append(f"{side}\n{compare[side][r]['route']}")
                for q in series:
                    series[q].append(compare[side][r][f"{q}_ms"]["median"])
        width = 0.27
        for i, (q, vals) in enumerate(series.items()):
            ax.bar([j + (i - 1) * width for j in range(len(lat_labels))], vals, width, label=q)
        ax.set_xticks(range(len(lat_labels)), lat_labels, fontsize=8)
        ax.set_ylabel("latency ms (median of runs)")
        ax.set_title(f"HTTP latency percentiles at saturation, wrk ({stamp})", fontsize=9)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, charts / "http_latency.png"))
        plt.close(fig)

    scaling = groups.get("scaling", {}).get("result")
    if scaling:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        inst = scaling["instances"]
        xs = [i["instances"] for i in inst]
        med = [i["tasks_per_s"]["median"] for i in inst]
        a1.errorbar(
            xs,
            med,
            yerr=[
                [m - i["tasks_per_s"]["min"] for m, i in zip(med, inst, strict=True)],
                [i["tasks_per_s"]["max"] - m for m, i in zip(med, inst, strict=True)],
            ],
            marker="o",
            color=HULK_COLOR,
            capsize=3,
        )
        a1.set_xticks(xs)
        a1.set_xlabel("hulk instances on one JetStream server")
        a1.set_ylabel("tasks/s")
        a1.set_ylim(0, max(i["tasks_per_s"]["max"] for i in inst) * 1.2)
        a1.set_title("Throughput vs instances", fontsize=10)
        if scaling.get("depth"):
            d = scaling["depth"]
            a2.plot([x["depth_seen"] for x in d], [x["p50_ms"] for x in d], marker="o", label="p50")
            a2.plot([x["depth_seen"] for x in d], [x["max_ms"] for x in d], marker="o", label="max")
            a2.set_xlabel("tasks in the intake stream ahead of the probe")
            a2.set_ylabel("submit → completed, ms")
            a2.set_title("Latency vs queue depth (1 instance)", fontsize=10)
            a2.legend()
        fig.suptitle(stamp, fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, charts / "scaling.png"))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def render(results: dict[str, Any], out: Path) -> None:
    """Writes RESULTS.md and charts/ into `out`."""
    render_charts(results, out / "charts")
    (out / "RESULTS.md").write_text(render_markdown(results))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    render(json.loads((target / "results.json").read_text()), target)
