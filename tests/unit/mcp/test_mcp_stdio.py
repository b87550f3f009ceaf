"""hulk-mcp as agents run it: a subprocess (`python -m hulk.mcp --url ...`) driven by the mcp SDK's own
client over stdio (and once over streamable HTTP), against a live HTTP API. Lists the tools and calls each
one, with good and bad arguments."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent, TextResourceContents

from tests.unit.cli.ops_live import LiveApi, closed_port_url

TOOLS = {
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


async def test_every_tool_and_bad_arguments_over_stdio(live: LiveApi) -> None:
    dead_id = live.backend.add_dead(reason="smtp refused")
    async with Client(hulk_mcp("--url", live.url, "--admin-token", live.admin_token)) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        schemas = {t.name: t.input_schema for t in listed.tools}
        assert schemas["submit_task"]["required"] == ["task_type"]
        assert schemas["get_task"]["properties"]["wait_seconds"]["maximum"] == 60

        done = ok(await client.call_tool("submit_task", {"task_type": "echo", "payload": [1], "wait_seconds": 5}))
        assert done["status"] == "succeeded"
        assert done["result"] == [1]
        queued = ok(await client.call_tool("submit_task", {"task_type": "slow"}))
        assert queued["status"] == "queued"
        assert ok(await client.call_tool("get_task", {"task_id": queued["id"]}))["status"] == "queued"
        assert ok(await client.call_tool("cancel_task", {"task_id": queued["id"]}))["status"] == "cancelled"

        status = ok(await client.call_tool("runtime_status", {}))
        assert status["health"] == {"status": "ok"}
        assert status["ready"]["ready"] is True
        assert status["runtime"]["workers"]["size"] == 4

        breakers = ok(await client.call_tool("list_breakers", {}))["breakers"]
        assert {b["name"]: b["state"] for b in breakers} == {"email": "closed", "payments": "open"}
        assert ok(await client.call_tool("reset_breaker", {"name": "payments"}))["action"] == "reset"
        assert live.backend.breaker_states["payments"] == "closed"

        assert ok(await client.call_tool("cache_stats", {}))["l1"]["hits"] == 10

        dead = ok(await client.call_tool("list_dead_tasks", {"limit": 10}))["tasks"]
        assert [d["id"] for d in dead] == [dead_id]
        assert dead[0]["error"]["message"] == "smtp refused"
        replayed = ok(await client.call_tool("replay_dead_task", {"task_id": dead_id}))
        assert replayed["status"] == "queued"
        assert replayed["id"] != dead_id

        failures = await client.read_resource("hulk://failures/recent")
        block = failures.contents[0]
        assert isinstance(block, TextResourceContents)
        assert json.loads(block.text)["failures"][0]["error"]["message"] == "smtp refused"
        config = await client.read_resource("hulk://config")
        block = config.contents[0]
        assert isinstance(block, TextResourceContents)
        shown = json.loads(block.text)
        assert shown["hulk_mcp"]["admin_token"] == "***"
        assert live.admin_token not in block.text

        # Bad arguments and refusals: tool errors that say why, and the server carries on.
        bad_calls: list[tuple[str, dict[str, Any], str]] = [
            ("submit_task", {}, "task_type"),
            ("submit_task", {"task_type": "has space"}, "pattern"),
            ("submit_task", {"task_type": "echo", "wait_seconds": 61}, "wait_seconds"),
            ("submit_task", {"task_type": "echo", "priority": 10}, "priority"),
            ("get_task", {"task_id": "a/b"}, "task_id"),
            ("get_task", {"task_id": 5}, "task_id"),
            ("cancel_task", {"task_id": ""}, "task_id"),
            ("reset_breaker", {"name": "x y"}, "name"),
            ("list_dead_tasks", {"limit": 0}, "limit"),
            ("list_dead_tasks", {"limit": "many"}, "limit"),
            ("replay_dead_task", {}, "task_id"),
        ]
        for name, arguments, mentioned in bad_calls:
            result = await client.call_tool(name, arguments)
            assert result.is_error, (name, arguments)
            assert mentioned in text(result), (name, text(result))
        refused = [
            ("get_task", {"task_id": "nope"}, "404 task_not_found"),
            ("cancel_task", {"task_id": "nope"}, "404 task_not_found"),
            ("reset_breaker", {"name": "nope"}, "breaker_not_found"),
            ("replay_dead_task", {"task_id": "nope"}, "no dead task"),
        ]
        for name, arguments, mentioned in refused:
            result = await client.call_tool(name, arguments)
            assert result.is_error, (name, arguments)
            assert mentioned in text(result), (name, text(result))
        unknown = await client.call_tool("drop_database", {})
        assert unknown.is_error
        # The server is still there after every refusal.
        assert ok(await client.call_tool("runtime_status", {}))["ready"]["ready"] is True


async def test_state_changes_refused_without_admin_token(live: LiveApi) -> None:
    async with Client(hulk_mcp("--url", live.url)) as client:
        for name, arguments in [
            ("submit_task", {"task_type": "echo"}),
            ("cancel_task", {"task_id": "t1"}),
            ("reset_breaker", {"name": "email"}),
            ("replay_dead_task", {"task_id": "t1"}),
        ]:
            result = await client.call_tool(name, arguments)
            assert result.is_error
            assert "no admin token" in text(result)
        assert not live.backend.tasks
        assert live.backend.breaker_states["payments"] == "open"
        # Reading stays allowed.
        assert ok(await client.call_tool("list_dead_tasks", {}))["tasks"] == []
        result = await client.call_tool("list_breakers", {})
        assert result.is_error
        assert "admin token" in text(result)


@contextlib.contextmanager
def streamable_http_server(*args: str) -> Iterator[str]:
    """`python -m hulk.mcp --transport streamable-http` on a free port; ready when uvicorn says it runs."""
    port = int(closed_port_url().rsplit(":", 1)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HULK_")}
    command = [sys.executable, "-m", "hulk.mcp", "--transport", "streamable-http", "--port", str(port), *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "Uvicorn running on" in line:
                break
        else:
            raise RuntimeError("hulk-mcp did not start:\n" + "".join(seen))
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


async def test_streamable_http_transport(live: LiveApi) -> None:
    with streamable_http_server("--url", live.url, "--admin-token", live.admin_token) as endpoint:
        async with Client(endpoint) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            done = ok(await client.call_tool("submit_task", {"task_type": "echo", "payload": 7, "wait_seconds": 5}))
            assert done["result"] == 7
            bad = await client.call_tool("list_dead_tasks", {"limit": -1})
            assert bad.is_error
