"""thor's task commands and bench through its CLI runner against a live HTTP API (real uvicorn)."""

from __future__ import annotations

import json
from pathlib import Path

from hulk.cli.thor import app, percentile
from tests.unit.cli.ops_live import LiveApi, as_json, closed_port_url, runner, thor

# --- tasks ---------------------------------------------------------------------------------------


def test_submit_and_wait_for_the_result(live: LiveApi) -> None:
    view = as_json(thor(live, "tasks", "submit", "echo", "--payload", '{"a": [1, 2]}', "--wait", "--json"))
    assert view["status"] == "succeeded"
    assert view["result"] == {"a": [1, 2]}
    result = thor(live, "tasks", "submit", "echo", "-p", '"hi"', "-w")
    assert result.exit_code == 0
    assert "succeeded" in result.stdout


def test_submit_without_wait_returns_the_id(live: LiveApi) -> None:
    view = as_json(
        thor(
            live,
            "tasks",
            "submit",
            "slow",
            "--key",
            "k1",
            "--delay",
            "1s",
            "--task-timeout",
            "30s",
            "--max-retries",
            "2",
            "--priority",
            "5",
            "--json",
        )
    )
    assert view["status"] == "queued"
    assert live.backend.tasks[view["id"]]["max_retries"] == 2


def test_submit_dead_task_with_wait_exits_1(live: LiveApi) -> None:
    result = thor(live, "tasks", "submit", "fail", "--wait")
    assert result.exit_code == 1
    assert "dead" in result.stdout
    assert "handler failed" in result.stdout


def test_submit_wait_that_runs_out_exits_1(live: LiveApi) -> None:
    result = thor(live, "tasks", "submit", "slow", "--wait", "--wait-for", "200ms")
    assert result.exit_code == 1
    assert "still queued after 200ms" in result.stderr


def test_submit_payload_from_file_and_stdin(live: LiveApi, tmp_path: Path) -> None:
    file = tmp_path / "payload.json"
    file.write_text('{"from": "file"}')
    view = as_json(thor(live, "tasks", "submit", "echo", "-p", f"@{file}", "-w", "--json"))
    assert view["result"] == {"from": "file"}
    view = as_json(thor(live, "tasks", "submit", "echo", "-p", "-", "-w", "--json", stdin='{"from": "stdin"}'))
    assert view["result"] == {"from": "stdin"}
    result = thor(live, "tasks", "submit", "echo", "-p", f"@{tmp_path / 'missing.json'}")
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_submit_invalid_type_names_the_field(live: LiveApi) -> None:
    result = thor(live, "--json", "tasks", "submit", "no spaces allowed")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["status"] == 422
    assert error["code"] == "invalid_field"
    assert error["field"] == "$.type"
    assert error["request_id"]


def test_submit_refused_when_queue_full(live: LiveApi) -> None:
    live.backend.full = True
    result = thor(live, "tasks", "submit", "echo")
    assert result.exit_code == 1
    assert "429 queue_full" in result.stderr
    assert "retry after" in result.stderr


def test_get_and_cancel(live: LiveApi) -> None:
    task_id = as_json(thor(live, "tasks", "submit", "slow", "--json"))["id"]
    view = as_json(thor(live, "tasks", "get", task_id, "--json"))
    assert view["status"] == "queued"
    result = thor(live, "tasks", "get", task_id)
    assert task_id in result.stdout
    assert "queued" in result.stdout
    view = as_json(thor(live, "tasks", "cancel", task_id, "--json"))
    assert view["status"] == "cancelled"
    result = thor(live, "tasks", "cancel", task_id)
    assert result.exit_code == 0
    assert "cancelled" in result.stdout
    view = as_json(thor(live, "tasks", "get", task_id, "--wait", "5s", "--json"))
    assert view["status"] == "cancelled"


def test_get_wait_returns_when_the_wait_runs_out(live: LiveApi) -> None:
    task_id = as_json(thor(live, "tasks", "submit", "slow", "--json"))["id"]
    view = as_json(thor(live, "tasks", "get", task_id, "--wait", "100ms", "--json"))
    assert view["status"] == "queued"


def test_get_unknown_task_exits_1(live: LiveApi) -> None:
    result = thor(live, "tasks", "get", "nope")
    assert result.exit_code == 1
    assert "404 task_not_found" in result.stderr
    assert "request" in result.stderr


def test_dead_lists_reasons(live: LiveApi) -> None:
    live.backend.add_dead(reason="smtp refused")
    live.backend.add_dead("resize", tenant="acme", reason="image too large")
    result = thor(live, "tasks", "dead")
    assert result.exit_code == 0, result.output
    assert "ValueError: smtp refused" in result.stdout
    assert "image too large" in result.stdout
    dead = as_json(thor(live, "tasks", "dead", "--json", "--limit", "1"))
    assert len(dead) == 1
    assert dead[0]["type"] == "resize"
    mine = as_json(thor(live, "tasks", "dead", "--json", admin=False))
    assert [d["tenant"] for d in mine] == ["default"]


def test_dead_when_there_are_none(live: LiveApi) -> None:
    result = thor(live, "tasks", "dead")
    assert result.exit_code == 0
    assert "no dead tasks" in result.stdout


def test_replay_one_with_confirmation(live: LiveApi) -> None:
    dead_id = live.backend.add_dead()
    result = thor(live, "tasks", "replay", dead_id, stdin="n\n")
    assert result.exit_code == 1
    assert "nothing replayed" in result.stderr
    result = thor(live, "tasks", "replay", dead_id, stdin="y\n")
    assert result.exit_code == 0, result.output
    assert dead_id in result.stdout
    replayed = as_json(thor(live, "tasks", "replay", dead_id, "--yes", "--json"))
    assert replayed[0]["dead_id"] == dead_id
    assert replayed[0]["status"] == "queued"
    assert replayed[0]["id"] != dead_id


def test_replay_unknown_task_exits_1(live: LiveApi) -> None:
    result = thor(live, "tasks", "replay", "nope", "--yes")
    assert result.exit_code == 1
    assert "no dead task" in result.stderr


def test_replay_all(live: LiveApi) -> None:
    ids = {live.backend.add_dead() for _ in range(3)}
    result = thor(live, "tasks", "replay", "--all", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "Replay 3 dead task(s)?" in result.stderr
    replayed = as_json(thor(live, "tasks", "replay", "--all", "--yes", "--json"))
    assert {r["dead_id"] for r in replayed} == ids


def test_replay_all_reports_each_failure(live: LiveApi) -> None:
    live.backend.add_dead()
    live.backend.draining = True
    result = thor(live, "--json", "tasks", "replay", "--all", "--yes")
    assert result.exit_code == 1
    (item,) = json.loads(result.stdout)
    assert "503 draining" in item["error"]


def test_replay_all_with_nothing_dead(live: LiveApi) -> None:
    result = thor(live, "tasks", "replay", "--all")
    assert result.exit_code == 0
    assert "no dead tasks" in result.stdout
    assert as_json(thor(live, "tasks", "replay", "--all", "--json")) == []


# --- bench ---------------------------------------------------------------------------------------


def test_bench_prints_throughput_and_percentiles(live: LiveApi) -> None:
    summary = as_json(thor(live, "bench", "--type", "echo", "--count", "60", "--concurrency", "8", "--json"))
    assert summary["count"] == 60
    assert summary["statuses"] == {"succeeded": 60}
    assert summary["errors"] == {}
    assert summary["throughput_per_s"] > 0
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    result = thor(live, "bench", "-n", "20", "-c", "4")
    assert result.exit_code == 0, result.output
    assert "tasks/s" in result.stdout
    assert "p99" in result.stdout


def test_bench_no_wait_counts_accepted(live: LiveApi) -> None:
    summary = as_json(thor(live, "bench", "--type", "slow", "-n", "10", "-c", "3", "--no-wait", "--json"))
    assert summary["statuses"] == {"queued": 10}


def test_bench_failures_exit_1(live: LiveApi) -> None:
    result = thor(live, "bench", "--type", "fail", "-n", "5", "-c", "2", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["statuses"] == {"dead": 5}
    result = thor(live, "bench", "--type", "slow", "-n", "2", "-c", "2", "--wait-for", "50ms", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["statuses"] == {"unfinished": 2}
    live.backend.full = True
    result = thor(live, "bench", "-n", "5", "-c", "2")
    assert result.exit_code == 1
    assert "429 queue_full" in result.stdout


def test_bench_unreachable_exits_3() -> None:
    result = runner.invoke(app, ["--url", closed_port_url(), "bench", "-n", "5", "-c", "2"])
    assert result.exit_code == 3
    assert "cannot reach hulk" in result.stderr


def test_percentile() -> None:
    assert percentile([], 50) == 0.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 0) == 3.0
