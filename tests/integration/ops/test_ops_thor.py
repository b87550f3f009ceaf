"""thor through its CLI runner against a real `hulk serve` with a real nats-server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import Result

from hulk.cli.thor import app
from tests.integration.ops.conftest import HulkService
from tests.unit.cli.ops_live import runner

pytestmark = pytest.mark.integration


def thor(service: HulkService, *args: str, stdin: str | None = None) -> Result:
    head = ["--url", service.url, "--token", service.admin_token, "--nats-url", service.nats_url]
    return runner.invoke(app, [*head, *args], input=stdin)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status_sees_the_instance_and_its_heartbeat(service: HulkService) -> None:
    report = as_json(thor(service, "status", "--json"))
    assert report["ready"]["ready"] is True
    assert report["runtime"]["instance"] == service.instance
    assert report["runtime"]["workers"]["count"] == 4
    assert "depth" in report["runtime"]["queue"]
    assert isinstance(report["breakers"], list)
    # The first heartbeat goes out as the service starts; under load the next ones may be late, so only
    # its presence is checked (the alive/gone judgement has its own unit test).
    beats = {i["instance"]: i for i in report["instances"]}
    assert service.instance in beats, report["instances"]
    assert beats[service.instance]["version"] == report["runtime"]["version"]
    result = thor(service, "status")
    assert result.exit_code == 0
    assert "ready" in result.stdout
    assert service.instance in result.stdout


def test_task_life_cycle(service: HulkService) -> None:
    done = as_json(thor(service, "tasks", "submit", "echo", "--payload", '{"n": 42}', "--wait", "--json"))
    assert done["status"] == "succeeded"
    assert done["result"] == {"n": 42}
    assert as_json(thor(service, "tasks", "get", done["id"], "--json"))["result"] == {"n": 42}

    slow = as_json(thor(service, "tasks", "submit", "sleep", "--payload", '{"ms": 60000}', "--json"))
    cancelled = as_json(thor(service, "tasks", "cancel", slow["id"], "--json"))
    assert cancelled["id"] == slow["id"]
    final = as_json(thor(service, "tasks", "get", slow["id"], "--wait", "10s", "--json"))
    assert final["status"] == "cancelled"

    result = thor(service, "tasks", "submit", "no.such.type", "--json")
    assert result.exit_code == 1
    assert "unknown_task_type" in result.stderr


def test_dead_letters_and_replay(service: HulkService) -> None:
    died = thor(service, "tasks", "submit", "fail", "--wait", "--json", "--max-retries", "0")
    assert died.exit_code == 1  # --wait: a task that ended badly
    dead = json.loads(died.stdout)
    assert dead["status"] == "dead"
    listed = thor(service, "tasks", "dead")
    assert listed.exit_code == 0
    assert "BuiltinFailure" in listed.stdout
    ids = [t["id"] for t in as_json(thor(service, "tasks", "dead", "--json"))]
    assert dead["id"] in ids
    replayed = as_json(thor(service, "tasks", "replay", dead["id"], "--yes", "--json"))
    assert replayed[0]["dead_id"] == dead["id"]
    assert replayed[0]["id"]
    again = as_json(thor(service, "tasks", "get", replayed[0]["id"], "--wait", "10s", "--json"))
    assert again["type"] == "fail"


def test_admin_surfaces(service: HulkService) -> None:
    assert isinstance(as_json(thor(service, "breakers", "list", "--json")), list)
    result = thor(service, "breakers", "reset", "no-such-breaker")
    assert result.exit_code == 1
    assert "breaker_not_found" in result.stderr
    stats = as_json(thor(service, "cache", "stats", "--json"))
    assert stats
    flushed = as_json(thor(service, "cache", "flush", "--yes", "--json"))
    assert flushed["flushed"] >= 0
    unauthorized = runner.invoke(app, ["--url", service.url, "--token", "wrong", "cache", "stats"])
    assert unauthorized.exit_code == 1
    assert "admin token" in unauthorized.stderr


def test_streams(service: HulkService) -> None:
    report = {s["name"]: s for s in as_json(thor(service, "streams", "--json"))}
    assert {"HULK_ENGINE_TASKS", "HULK_ENGINE_EVENTS", "HULK_ERRORS", "HULK_SCHEDULER_QUEUE"} <= set(report)
    workers = [c["name"] for c in report["HULK_ENGINE_TASKS"]["consumer_details"]]
    assert "hulk-workers" in workers
    assert report["HULK_ENGINE_EVENTS"]["messages"] > 0
    assert "HULK_ENGINE_TASKS" in thor(service, "streams").stdout


def test_config_check_and_show(service: HulkService) -> None:
    assert as_json(runner.invoke(app, ["config", "check", str(service.config), "--json"]))["valid"] is True
    shown = runner.invoke(app, ["config", "show", str(service.config), "--json"])
    assert service.admin_token not in shown.stdout
    assert as_json(shown)["server"]["admin_token"] == "***"
    via_config = runner.invoke(app, ["--config", str(service.config), "--url", service.url, "breakers", "list"])
    assert via_config.exit_code == 0, via_config.output


def test_bench(service: HulkService) -> None:
    summary = as_json(thor(service, "bench", "--type", "echo", "--count", "100", "--concurrency", "8", "--json"))
    assert summary["statuses"] == {"succeeded": 100}
    assert summary["errors"] == {}
    assert summary["throughput_per_s"] > 0
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]


def test_drain(fresh_service: HulkService) -> None:
    assert thor(fresh_service, "drain", stdin="n\n").exit_code == 1
    assert thor(fresh_service, "status", "--no-nats").exit_code == 0
    assert as_json(thor(fresh_service, "drain", "--yes", "--json")) == {"draining": True}
    # The service drains and then stops: not ready (1), or already gone (3).
    assert thor(fresh_service, "status", "--no-nats").exit_code in (1, 3)
