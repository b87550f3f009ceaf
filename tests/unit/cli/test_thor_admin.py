"""thor's status, admin, streams and config commands through its CLI runner, against a live HTTP API
(real uvicorn) and a real nats-server; help and usage errors of every command."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from hulk.cli.thor import app
from tests.unit.cli.ops_live import LiveApi, as_json, closed_port_url, nats_server, runner, thor

# --- help and usage ------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["status"],
    ["drain"],
    ["streams"],
    ["bench"],
    ["tasks"],
    ["tasks", "submit"],
    ["tasks", "get"],
    ["tasks", "cancel"],
    ["tasks", "dead"],
    ["tasks", "replay"],
    ["breakers"],
    ["breakers", "list"],
    ["breakers", "reset"],
    ["breakers", "open"],
    ["cache"],
    ["cache", "stats"],
    ["cache", "flush"],
    ["config"],
    ["config", "check"],
    ["config", "show"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "thor")
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Examples" in result.stdout


def test_usage_errors_exit_2(live: LiveApi) -> None:
    assert runner.invoke(app, ["tasks", "frobnicate"]).exit_code == 2
    assert runner.invoke(app, ["bench", "--count", "0"]).exit_code == 2
    result = thor(live, "tasks", "submit", "echo", "--payload", "{not json")
    assert result.exit_code == 2
    assert "not valid JSON" in result.output
    result = thor(live, "tasks", "get", "x", "--wait", "soon")
    assert result.exit_code == 2
    assert "duration" in result.output
    result = runner.invoke(app, ["--url", "ftp://nowhere", "status"])
    assert result.exit_code == 2
    assert "http://" in result.stderr
    assert thor(live, "tasks", "replay").exit_code == 2
    assert thor(live, "tasks", "replay", "t1", "--all").exit_code == 2
    result = thor(live, "tasks", "get", "a/b")
    assert result.exit_code == 2
    assert "without '/'" in result.stderr


def test_completion_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer.completion

    # `--show-completion` prints the script of the shell typer detects among the test's parent
    # processes; a suite started without a shell above it (a detached job) has none to detect.
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.stdout
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="thor")
    assert script.exit_code == 0
    assert "_THOR_COMPLETE=complete_bash" in script.stdout
    env = {"_THOR_COMPLETE": "complete_bash", "COMP_WORDS": "thor tasks re", "COMP_CWORD": "2"}
    completed = runner.invoke(app, [], env=env, prog_name="thor")
    assert completed.stdout.split() == ["replay"]


# --- unreachable ---------------------------------------------------------------------------------


def test_unreachable_instance_exits_3() -> None:
    url = closed_port_url()
    result = runner.invoke(app, ["--url", url, "status"])
    assert result.exit_code == 3
    assert "cannot reach hulk" in result.stderr
    assert "HULK_URL" in result.stderr
    result = runner.invoke(app, ["--url", url, "--json", "tasks", "get", "t1"])
    assert result.exit_code == 3
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "unreachable"
    assert error["url"] == url


def test_url_and_token_from_environment(live: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULK_URL", live.url)
    monkeypatch.setenv("HULK_TOKEN", live.admin_token)
    result = runner.invoke(app, ["breakers", "list", "--json"])
    assert [b["name"] for b in as_json(result)] == ["email", "payments"]


# --- status --------------------------------------------------------------------------------------


def test_status_json(live: LiveApi) -> None:
    report = as_json(thor(live, "status", "--no-nats", "--json"))
    assert report["health"] == {"status": "ok"}
    assert report["ready"]["ready"] is True
    assert report["runtime"]["workers"]["size"] == 4
    assert report["runtime"]["queue"]["depth"] == 0
    assert [b["name"] for b in report["breakers"]] == ["email", "payments"]
    assert report["cache"]["l1"]["hits"] == 10
    assert "instances" not in report


def test_status_table_without_admin_token(live: LiveApi) -> None:
    result = thor(live, "status", "--no-nats", admin=False)
    assert result.exit_code == 0, result.output
    assert "ready" in result.stdout
    assert "queue.depth" in result.stdout
    assert "workers.size" in result.stdout
    assert "needs the admin token" in result.stdout


def test_status_table_with_admin_token(live: LiveApi) -> None:
    result = thor(live, "status", "--no-nats")
    assert result.exit_code == 0, result.output
    assert "payments" in result.stdout
    assert "l1.hits" in result.stdout


def test_status_not_ready_exits_1(live: LiveApi) -> None:
    live.backend.draining = True
    result = thor(live, "status", "--no-nats")
    assert result.exit_code == 1
    assert "NOT READY" in result.stdout
    report = json.loads(thor(live, "--json", "status", "--no-nats").stdout)
    assert report["ready"]["checks"]["draining"] is True


def test_status_degrades_when_nats_is_unreachable(live: LiveApi) -> None:
    nats_url = closed_port_url().replace("http", "nats")
    result = thor(live, "--nats-url", nats_url, "status")
    assert result.exit_code == 0, result.output
    assert "cannot reach NATS" in result.stdout
    report = as_json(thor(live, "--nats-url", nats_url, "status", "--json"))
    assert "cannot reach NATS" in report["instances"]["error"]["message"]


# --- breakers, cache, drain ----------------------------------------------------------------------


def test_breakers(live: LiveApi) -> None:
    result = thor(live, "breakers", "list")
    assert result.exit_code == 0
    assert "payments" in result.stdout
    assert "open" in result.stdout
    assert as_json(thor(live, "breakers", "reset", "payments", "--json")) == {"name": "payments", "action": "reset"}
    assert live.backend.breaker_states["payments"] == "closed"
    result = thor(live, "breakers", "open", "email")
    assert result.exit_code == 0
    assert "forced open" in result.stdout
    assert live.backend.breaker_states["email"] == "open"
    result = thor(live, "breakers", "reset", "email")
    assert "reset" in result.stdout
    assert as_json(thor(live, "breakers", "open", "email", "--json"))["action"] == "open"


def test_breakers_empty(live: LiveApi) -> None:
    live.backend.breaker_states.clear()
    result = thor(live, "breakers", "list")
    assert "no breakers" in result.stdout


def test_unknown_breaker_exits_1(live: LiveApi) -> None:
    result = thor(live, "breakers", "reset", "nope")
    assert result.exit_code == 1
    assert "breaker_not_found" in result.stderr


def test_admin_commands_need_the_admin_token(live: LiveApi) -> None:
    result = thor(live, "breakers", "list", admin=False)
    assert result.exit_code == 1
    assert "401 unauthorized" in result.stderr
    assert "admin token" in result.stderr
    result = thor(live, "--token", "wrong", "cache", "stats")
    assert result.exit_code == 1
    result = thor(live, "--token", "tenant", "--admin-token", live.admin_token, "cache", "stats", admin=False)
    assert result.exit_code == 0


def test_cache(live: LiveApi) -> None:
    stats = as_json(thor(live, "cache", "stats", "--json"))
    assert stats["l2"]["state"] == "up"
    result = thor(live, "cache", "stats")
    assert "l1.misses" in result.stdout
    result = thor(live, "cache", "flush", stdin="n\n")
    assert result.exit_code == 1
    assert live.backend.flushed == []
    result = thor(live, "cache", "flush", stdin="y\n")
    assert result.exit_code == 0
    assert "5 entries removed" in result.stdout
    assert as_json(thor(live, "cache", "flush", "--tenant", "acme", "--yes", "--json")) == {
        "flushed": 5,
        "tenant": "acme",
    }
    assert live.backend.flushed == [None, "acme"]


def test_drain(live: LiveApi) -> None:
    result = thor(live, "drain", stdin="n\n")
    assert result.exit_code == 1
    assert not live.backend.draining
    result = thor(live, "drain", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert f"Drain {live.url}?" in result.stderr
    assert live.backend.draining
    assert as_json(thor(live, "drain", "--yes", "--json")) == {"draining": True}
    assert thor(live, "status", "--no-nats").exit_code == 1


# --- NATS: streams and instances -----------------------------------------------------------------


def test_streams_table_and_json(nats_url: str) -> None:
    result = runner.invoke(app, ["--nats-url", nats_url, "streams"])
    assert result.exit_code == 0, result.output
    assert "HULK_ENGINE_TASKS" in result.stdout
    assert "OTHER" not in result.stdout
    assert "hulk-workers" in result.stdout
    report = {s["name"]: s for s in as_json(runner.invoke(app, ["--nats-url", nats_url, "streams", "--json"]))}
    assert set(report) == {"HULK_ENGINE_EVENTS", "HULK_ENGINE_TASKS"}
    tasks = report["HULK_ENGINE_TASKS"]
    assert tasks["messages"] == 5
    assert tasks["bytes"] > 0
    assert tasks["consumers"] == 1
    (consumer,) = tasks["consumer_details"]
    assert consumer["name"] == "hulk-workers"
    assert tasks["pending"] == consumer["pending"] == 0
    assert consumer["ack_pending"] == 3
    assert tasks["redelivered"] == consumer["redelivered"] == 2
    assert report["HULK_ENGINE_EVENTS"]["consumers"] == 0
    every = as_json(runner.invoke(app, ["--nats-url", nats_url, "streams", "--all", "--json"]))
    assert "OTHER" in {s["name"] for s in every}


def test_streams_when_nats_is_unreachable() -> None:
    nats_url = closed_port_url().replace("http", "nats")
    result = runner.invoke(app, ["--nats-url", nats_url, "streams"])
    assert result.exit_code == 3
    assert "cannot reach NATS" in result.stderr
    result = runner.invoke(app, ["--nats-url", nats_url, "--json", "streams"])
    assert json.loads(result.stderr)["error"]["kind"] == "nats_unreachable"


def test_streams_none_named_hulk(tmp_path: Path) -> None:
    with nats_server(tmp_path) as url:
        result = runner.invoke(app, ["--nats-url", url, "streams"])
    assert result.exit_code == 0
    assert "no streams named HULK_*" in result.stdout


def test_status_lists_instances_from_heartbeats(live: LiveApi, nats_url: str) -> None:
    report = as_json(thor(live, "--nats-url", nats_url, "status", "--json"))
    found = {i["instance"]: i for i in report["instances"]}
    assert set(found) == {"a", "b", "c"}
    assert found["a"]["status"] == "draining"
    assert found["a"]["alive"] is True
    assert found["c"]["alive"] is False  # silent for more than three of its intervals
    assert found["b"]["workers"] == 8
    assert all(0 <= i["seen_ago"] < 60 for i in found.values())
    result = thor(live, "--nats-url", nats_url, "status")
    assert "instances (heartbeats)" in result.stdout
    assert "draining" in result.stdout
    # The heartbeat reader deletes its ephemeral consumer.
    streams = as_json(runner.invoke(app, ["--nats-url", nats_url, "streams", "--json"]))
    assert {s["name"]: s["consumers"] for s in streams}["HULK_ENGINE_EVENTS"] == 0


def test_status_with_no_recent_heartbeat(live: LiveApi, tmp_path: Path) -> None:
    with nats_server(tmp_path) as url:
        result = thor(live, "--nats-url", url, "status")
        assert result.exit_code == 0, result.output
        assert "no heartbeat" in result.stdout


# --- configuration -------------------------------------------------------------------------------


def write_config(path: Path, live: LiveApi | None = None, *, extra: str = "") -> Path:
    port = live.url.rsplit(":", 1)[1] if live else "8080"
    token = live.admin_token if live else "t0p-secret"
    path.write_text(f'server:\n  host: 0.0.0.0\n  port: {port}\n  admin_token: "{token}"\n{extra}')
    return path


def test_config_check(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml")
    result = runner.invoke(app, ["config", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.stdout
    assert as_json(runner.invoke(app, ["--config", str(good), "config", "check", "--json"]))["valid"] is True
    bad = write_config(tmp_path / "bad.yaml", extra="engine:\n  wrokers: 4\n")
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "engine.wrokers" in result.stderr
    result = runner.invoke(app, ["config", "check", str(bad), "--json"])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["valid"] is False
    assert any("wrokers" in p for p in body["problems"])


def test_config_check_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 0
    assert "defaults" in result.stdout


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    file = write_config(tmp_path / "hulk.yaml")
    result = runner.invoke(app, ["config", "show", str(file)])
    assert result.exit_code == 0, result.output
    assert "server.admin_token" in result.stdout
    assert "t0p-secret" not in result.stdout
    data = as_json(runner.invoke(app, ["--config", str(file), "config", "show", "--json"]))
    assert data["server"]["admin_token"] == "***"
    assert data["server"]["port"] == 8080


def test_config_show_invalid_is_a_usage_error(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", extra="nats:\n  urls: []\n")
    result = runner.invoke(app, ["config", "show", str(bad)])
    assert result.exit_code == 2
    assert "nats.urls" in result.stderr


def test_instance_found_through_the_configuration_file(live: LiveApi, tmp_path: Path) -> None:
    file = write_config(tmp_path / "hulk.yaml", live)
    result = runner.invoke(app, ["--config", str(file), "breakers", "list", "--json"])
    assert [b["name"] for b in as_json(result)] == ["email", "payments"]


def test_nats_found_through_the_configuration_file(tmp_path: Path, nats_url: str) -> None:
    file = write_config(tmp_path / "hulk.yaml", extra=f'nats:\n  urls: ["{nats_url}"]\n')
    report = as_json(runner.invoke(app, ["--config", str(file), "streams", "--json"]))
    assert {s["name"] for s in report} == {"HULK_ENGINE_EVENTS", "HULK_ENGINE_TASKS"}


def test_timeout_exits_1(live: LiveApi) -> None:
    task_id = as_json(thor(live, "tasks", "submit", "slow", "--json"))["id"]
    started = time.monotonic()
    # The client allows the wait plus --timeout; a server stuck past both is a timeout, exit 1.
    live.backend.wait = _stuck  # type: ignore[method-assign]
    result = thor(live, "--timeout", "0.2", "tasks", "get", task_id, "--wait", "100ms")
    assert result.exit_code == 1, result.output
    assert "no answer" in result.stderr
    assert time.monotonic() - started < 30


async def _stuck(task_id: str, *, tenant: str, timeout: float) -> None:
    await asyncio.sleep(30)
