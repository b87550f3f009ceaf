"""hulk-mcp over stdio (the mcp SDK's own client spawning `python -m hulk.mcp`) against a real `hulk serve`
with a real nats-server: lists the tools, calls each one, with good and bad arguments."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent, TextResourceContents

from tests.integration.ops.conftest import HulkService

pytestmark = pytest.mark.integration


def hulk_mcp(*args: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HULK_")}
    return StdioServerParameters(command=sys.executable, args=["-m", "hulk.mcp", *args], env=env)


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def test_every_tool_against_the_service(service: HulkService) -> None:
    args = ("--url", service.url, "--admin-token", service.admin_token, "--config", str(service.config))
    async with Client(hulk_mcp(*args)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {
            "submit_task",
            "get_task",
            "cancel_task",
            "runtime_status",
            "list_breakers",
            "reset_breaker",
            "cache_stats",
            "list_dead_tasks",
            "replay_dead_task",
        }
        status = ok(await client.call_tool("runtime_status", {}))
        assert status["ready"]["ready"] is True
        assert status["runtime"]["instance"] == service.instance

        done = ok(await client.call_tool("submit_task", {"task_type": "echo", "payload": {"k": 1}, "wait_seconds": 10}))
        assert done["result"] == {"k": 1}

        slow = ok(await client.call_tool("submit_task", {"task_type": "sleep", "payload": {"ms": 60000}}))
        ok(await client.call_tool("cancel_task", {"task_id": slow["id"]}))
        assert ok(await client.call_tool("get_task", {"task_id": slow["id"], "wait_seconds": 10}))["status"] == (
            "cancelled"
        )

        dead = ok(await client.call_tool("submit_task", {"task_type": "fail", "max_retries": 0, "wait_seconds": 10}))
        assert dead["status"] == "dead"
        listed = ok(await client.call_tool("list_dead_tasks", {"limit": 100}))["tasks"]
        assert dead["id"] in [t["id"] for t in listed]
        replayed = ok(await client.call_tool("replay_dead_task", {"task_id": dead["id"]}))
        assert replayed["id"]

        assert isinstance(ok(await client.call_tool("list_breakers", {}))["breakers"], list)
        assert ok(await client.call_tool("cache_stats", {}))
        refused = await client.call_tool("reset_breaker", {"name": "no-such-breaker"})
        assert refused.is_error
        assert "breaker_not_found" in text(refused)

        bad_calls: list[tuple[str, dict[str, Any]]] = [
            ("submit_task", {"task_type": "no.such.type"}),
            ("submit_task", {"task_type": "bad type"}),
            ("get_task", {"task_id": "missing-task"}),
            ("list_dead_tasks", {"limit": 5000}),
            ("get_task", {}),
        ]
        for name, arguments in bad_calls:
            result = await client.call_tool(name, arguments)
            assert result.is_error, (name, arguments)
            assert text(result)

        failures = (await client.read_resource("hulk://failures/recent")).contents[0]
        assert isinstance(failures, TextResourceContents)
        assert json.loads(failures.text)["count"] >= 1
        config = (await client.read_resource("hulk://config")).contents[0]
        assert isinstance(config, TextResourceContents)
        assert service.admin_token not in config.text
        assert json.loads(config.text)["settings"]["server"]["admin_token"] == "***"


async def test_state_changes_refused_without_admin_token(service: HulkService) -> None:
    async with Client(hulk_mcp("--url", service.url, "--token", "not-the-admin-token")) as client:
        result = await client.call_tool("submit_task", {"task_type": "echo"})
        assert result.is_error
        assert "does not accept the configured admin token" in text(result)
        assert ok(await client.call_tool("runtime_status", {}))["ready"]["ready"] is True
