"""hulk-mcp's tools and resources in-process (the SDK's client connected to the server object), against a
live HTTP API: the failure paths, the admin gate, the resources, and the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent, TextResourceContents

from hulk.client import ApiError
from hulk.mcp.server import McpOptions, _tool_error, build_server, options_from_args
from tests.unit.cli.ops_live import LiveApi, closed_port_url


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def read(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    block = result.contents[0]
    assert isinstance(block, TextResourceContents)
    return block.text


def admin(live: LiveApi, **kwargs: Any) -> Client:
    return Client(build_server(McpOptions(url=live.url, admin_token=live.admin_token, **kwargs)))


async def test_submit_with_options_and_wait(live: LiveApi) -> None:
    async with admin(live) as client:
        view = ok(
            await client.call_tool(
                "submit_task",
                {
                    "task_type": "slow",
                    "payload": {"n": 1},
                    "idempotency_key": "k",
                    "priority": 3,
                    "max_retries": 2,
                    "wait_seconds": 0.05,
                },
            )
        )
        assert view["status"] == "queued"
        assert live.backend.tasks[view["id"]]["max_retries"] == 2
        view = ok(await client.call_tool("get_task", {"task_id": view["id"], "wait_seconds": 0.05}))
        assert view["status"] == "queued"
        dead = ok(await client.call_tool("submit_task", {"task_type": "fail", "wait_seconds": 5}))
        assert dead["status"] == "dead"
        assert dead["error"]["message"] == "handler failed"


async def test_wrong_admin_token_is_refused(live: LiveApi) -> None:
    async with Client(build_server(McpOptions(url=live.url, token="tenant-token"))) as client:
        result = await client.call_tool("reset_breaker", {"name": "payments"})
        assert result.is_error
        assert "does not accept the configured admin token" in text(result)
        assert "401" in text(result)
    assert live.backend.breaker_states["payments"] == "open"


async def test_admin_check_when_unreachable() -> None:
    async with Client(build_server(McpOptions(url=closed_port_url(), admin_token="x"))) as client:
        result = await client.call_tool("cancel_task", {"task_id": "t1"})
        assert result.is_error
        assert "cannot reach the hulk instance" in text(result)
        result = await client.call_tool("list_dead_tasks", {})
        assert "is it running?" in text(result)


async def test_refusals_carry_their_reason(live: LiveApi) -> None:
    async with admin(live) as client:
        live.backend.full = True
        result = await client.call_tool("submit_task", {"task_type": "echo"})
        assert result.is_error
        assert "429 queue_full" in text(result)
        assert "retry after 1s" in text(result)
        assert "[request " in text(result)
        result = await client.call_tool("get_task", {"task_id": ".."})
        assert result.is_error
        assert "without '/'" in text(result)


async def test_timeout_is_a_tool_error(live: LiveApi) -> None:
    async def stuck(task_id: str, *, tenant: str, timeout: float) -> None:
        await asyncio.sleep(30)

    live.backend.wait = stuck  # type: ignore[method-assign]
    async with admin(live, timeout=0.2) as client:
        result = await client.call_tool("get_task", {"task_id": "t1", "wait_seconds": 0.1})
        assert result.is_error
        assert "did not answer in time" in text(result)


def test_tool_error_names_the_field_and_the_admin_token() -> None:
    error = _tool_error(ApiError(422, "invalid_field", "bad", field="$.delay"), "http://h")
    assert "(field $.delay)" in str(error)
    error = _tool_error(ApiError(403, "admin_disabled", "off"), "http://h")
    assert "HULK_ADMIN_TOKEN" in str(error)
    assert str(_tool_error(ValueError("nope"), "http://h")) == "nope"


async def test_config_resource(live: LiveApi, tmp_path: Path) -> None:
    file = tmp_path / "hulk.yaml"
    file.write_text('server:\n  admin_token: "t0p-secret"\nnats:\n  urls: ["nats://u:pw@n1:4222"]\n')
    async with admin(live, config_path=file) as client:
        listed = await client.list_resources()
        assert {str(r.uri) for r in listed.resources} == {"hulk://config", "hulk://failures/recent"}
        shown = await read(client, "hulk://config")
        assert "t0p-secret" not in shown
        assert ":pw@" not in shown
        data = json.loads(shown)
        assert data["settings"]["server"]["admin_token"] == "***"
        assert data["hulk_mcp"] == {"url": live.url, "token": "", "admin_token": "***", "config_file": str(file)}
    file.write_text("engine:\n  wrokers: 3\n")
    async with admin(live, config_path=file) as client:
        with pytest.raises(Exception, match="wrokers"):
            await read(client, "hulk://config")


async def test_failures_resource(live: LiveApi) -> None:
    live.backend.add_dead(reason="disk full")
    async with admin(live) as client:
        data = json.loads(await read(client, "hulk://failures/recent"))
        assert data["count"] == 1
        assert data["failures"][0]["error"] == {"type": "ValueError", "message": "disk full"}
    async with Client(build_server(McpOptions(url=closed_port_url()))) as client:
        with pytest.raises(Exception, match="cannot reach"):
            await read(client, "hulk://failures/recent")


def test_options_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    options, args = options_from_args(["--url", "http://h:1", "--token", "t", "--timeout", "3"])
    assert (options.url, options.token, options.admin_token, options.timeout) == ("http://h:1", "t", None, 3.0)
    assert args.transport == "stdio"
    monkeypatch.setenv("HULK_URL", "https://env:9")
    monkeypatch.setenv("HULK_ADMIN_TOKEN", "adm")
    monkeypatch.setenv("HULK_TENANT", "acme")
    options, _ = options_from_args([])
    assert (options.url, options.admin_token, options.tenant) == ("https://env:9", "adm", "acme")


def test_options_from_the_configuration_file(tmp_path: Path) -> None:
    file = tmp_path / "hulk.yaml"
    file.write_text('server:\n  host: 0.0.0.0\n  port: 9999\n  admin_token: "s"\n')
    options, _ = options_from_args(["--config", str(file)])
    assert (options.url, options.token, options.config_path) == ("http://127.0.0.1:9999", "s", file)
    options, _ = options_from_args([])
    assert options.url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "argv",
    [["--url", "ftp://x"], ["--timeout", "0"], ["--transport", "carrier-pigeon"], ["--config", "BROKEN"]],
)
def test_usage_errors(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if "BROKEN" in argv:
        broken = tmp_path / "broken.yaml"
        broken.write_text("nats:\n  urls: []\n")
        argv = ["--config", str(broken)]
    with pytest.raises(SystemExit) as exited:
        options_from_args(argv)
    assert exited.value.code == 2
    assert "hulk-mcp" in capsys.readouterr().err


async def test_every_tool_in_process(live: LiveApi) -> None:
    dead_id = live.backend.add_dead()
    async with admin(live) as client:
        assert ok(await client.call_tool("runtime_status", {}))["runtime"]["instance"] == "mem-1"
        assert len(ok(await client.call_tool("list_breakers", {}))["breakers"]) == 2
        assert ok(await client.call_tool("reset_breaker", {"name": "payments"}))["name"] == "payments"
        assert ok(await client.call_tool("cache_stats", {}))["l2"]["state"] == "up"
        assert ok(await client.call_tool("list_dead_tasks", {"limit": 1}))["tasks"][0]["id"] == dead_id
        new_id = ok(await client.call_tool("replay_dead_task", {"task_id": dead_id}))["id"]
        assert ok(await client.call_tool("get_task", {"task_id": new_id}))["status"] == "queued"
        assert ok(await client.call_tool("cancel_task", {"task_id": new_id}))["status"] == "cancelled"
