"""hulk-mcp: a Model Context Protocol server through which AI agents operate a running hulk instance.

Built on the official `mcp` SDK (`MCPServer`), over stdio or streamable HTTP. It talks to the
instance's HTTP API like `thor` does, found the same way: `--url`/`HULK_URL`, `--token`/`HULK_TOKEN`,
else the configuration file's `server.*` (`--config`/`HULK_CONFIG`), else http://127.0.0.1:8080.

Every tool's arguments are validated against its JSON Schema (derived from the type hints below);
every failure (bad arguments, refused request, unreachable instance) comes back as an MCP tool error
with a message saying what to do, never as a crash. Tools that change state (`submit_task`,
`cancel_task`, `reset_breaker`, `replay_dead_task`) are refused unless an admin token is configured
and the instance accepts it.

Resources: `hulk://config` (the effective configuration, secrets redacted) and
`hulk://failures/recent` (the latest dead tasks with their reasons).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from hulk.client import (
    DEFAULT_URL,
    MAX_WAIT,
    TERMINAL_STATES,
    ApiError,
    ClientError,
    HulkClient,
    RequestTimeout,
    Unreachable,
    instance_from_settings,
)

__all__ = ["McpOptions", "build_server", "main", "options_from_args"]

T = TypeVar("T")

TaskId = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[^/\s]+$", description="A task's id, as submit_task returned it."),
]
TaskType = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="A registered task type, e.g. 'echo' or 'email.send'.",
    ),
]
WaitSeconds = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT, description="Seconds (0 to 60) to wait for the task to finish before answering."),
]
BreakerName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[^/\s]+$", description="The breaker's name.")
]

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

_INSTRUCTIONS = """\
Operate a hulk task runtime. Start with runtime_status. Submit work with submit_task (wait_seconds to
get the result in the same call), follow it with get_task, stop it with cancel_task. Failed work ends
in the dead letters: list_dead_tasks shows why each task died, replay_dead_task submits one again.
Circuit breakers: list_breakers, reset_breaker. Cache: cache_stats. Tools that change state need the
admin token to be configured on this server."""


@dataclass(frozen=True, kw_only=True)
class McpOptions:
    """Where the instance is and how to speak to it.

    Args:
        url: the instance's base URL.
        token: bearer token of the task routes.
        admin_token: bearer token of the admin routes (defaults to `token`); enables state changes.
        tenant: tenant header, for instances without tenant tokens.
        timeout: seconds per request (a wait adds to it).
        config_path: the configuration file shown by the `hulk://config` resource.
    """

    url: str = DEFAULT_URL
    token: str | None = None
    admin_token: str | None = None
    tenant: str | None = None
    timeout: float = 10.0
    config_path: Path | None = None


def _tool_error(exc: BaseException, url: str) -> ToolError:
    """A tool error whose message says what went wrong and, where it helps, what to do."""
    if isinstance(exc, Unreachable):
        return ToolError(f"cannot reach the hulk instance at {exc.url} ({exc.reason}); is it running?")
    if isinstance(exc, ApiError):
        detail = f"hulk refused the request: {exc.status} {exc.code}: {exc.message}"
        if exc.field:
            detail += f" (field {exc.field})"
        if exc.retry_after is not None:
            detail += f"; retry after {exc.retry_after:g}s"
        if exc.needs_admin:
            detail += "; this needs the admin token (configure hulk-mcp with --admin-token or HULK_ADMIN_TOKEN)"
        if exc.request_id:
            detail += f" [request {exc.request_id}]"
        return ToolError(detail)
    if isinstance(exc, RequestTimeout):
        return ToolError(f"the hulk instance at {url} did not answer in time ({exc.timeout:g}s)")
    return ToolError(str(exc))


class HulkTools:
    """The tools and resources, bound to one client of the instance.

    Args:
        options: where the instance is.
    """

    def __init__(self, options: McpOptions) -> None:
        self.options = options
        self._client: HulkClient | None = None
        self._admin_checked = False

    @property
    def client(self) -> HulkClient:
        """The client of the instance (opened by the server's lifespan, or on first use)."""
        if self._client is None:
            self._client = HulkClient(
                self.options.url,
                token=self.options.token,
                admin_token=self.options.admin_token,
                tenant=self.options.tenant,
                timeout=self.options.timeout,
            )
        return self._client

    async def aclose(self) -> None:
        """Closes the client's connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(self, request: Awaitable[T]) -> T:
        """Awaits one request to the instance, turning every failure into a `ToolError`."""
        try:
            return await request
        except (ClientError, ValueError) as exc:
            raise _tool_error(exc, self.options.url) from None

    async def require_admin(self, tool: str) -> None:
        """Refuses `tool` unless an admin token is configured and the instance accepts it.

        Raises:
            ToolError: no admin token, or the instance refuses it on its admin routes.
        """
        if not self.client.admin_token:
            raise ToolError(
                f"{tool} changes state and is refused: no admin token is configured. Start hulk-mcp with "
                "--admin-token (HULK_ADMIN_TOKEN), or --token (HULK_TOKEN) holding the instance's admin token."
            )
        if self._admin_checked:
            return
        try:
            await self.client.breakers()
        except ApiError as exc:
            if exc.needs_admin:
                raise ToolError(
                    f"{tool} changes state and is refused: the instance does not accept the configured "
                    f"admin token ({exc.status} {exc.code}: {exc.message})"
                ) from None
            raise _tool_error(exc, self.options.url) from None
        except ClientError as exc:
            raise _tool_error(exc, self.options.url) from None
        self._admin_checked = True

    # --- tools -----------------------------------------------------------------------------------

    async def submit_task(
        self,
        task_type: TaskType,
        payload: Annotated[Any, Field(description="Any JSON value: the task's input.")] = None,
        wait_seconds: WaitSeconds = 0.0,
        idempotency_key: Annotated[
            str | None,
            Field(min_length=1, max_length=256, description="A resubmission with the same key is the same task."),
        ] = None,
        priority: Annotated[int, Field(ge=0, le=9, description="0 (default) to 9.")] = 0,
        max_retries: Annotated[int | None, Field(ge=0, le=100, description="Retries after the first attempt.")] = None,
    ) -> dict[str, Any]:
        """Submit one task to the runtime (needs the admin token).

        Returns the new task's id and status; with wait_seconds, the finished task (status, result or
        error) when it ends within that time.
        """
        await self.require_admin("submit_task")
        started = time.monotonic()
        view = await self.call(
            self.client.submit(
                task_type,
                payload,
                wait=wait_seconds or None,
                idempotency_key=idempotency_key,
                priority=priority or None,
                max_retries=max_retries,
            )
        )
        if wait_seconds and view.get("status") not in TERMINAL_STATES:
            # The instance may answer before the task's record is readable: follow it for the rest.
            view = await self.call(self.client.follow(view, wait_seconds - (time.monotonic() - started)))
        return view

    async def get_task(self, task_id: TaskId, wait_seconds: WaitSeconds = 0.0) -> dict[str, Any]:
        """Show one task: status (queued, running, succeeded, dead, cancelled), attempts, result or error.

        With wait_seconds, waits up to that long for the task to finish.
        """
        return await self.call(self.client.get_task(task_id, wait=wait_seconds or None))

    async def cancel_task(self, task_id: TaskId) -> dict[str, Any]:
        """Cancel a queued, scheduled or running task (needs the admin token). Returns the task."""
        await self.require_admin("cancel_task")
        return await self.call(self.client.cancel_task(task_id))

    async def runtime_status(self) -> dict[str, Any]:
        """The instance's health, readiness, workers, queue, breakers, cache and uptime.

        Readiness comes with the checks that decided it (NATS, draining, event-loop lag).
        """
        health = await self.call(self.client.health())
        ready = await self.call(self.client.ready())
        runtime = await self.call(self.client.runtime())
        return {"url": self.client.url, "health": health, "ready": ready, "runtime": runtime}

    async def list_breakers(self) -> dict[str, Any]:
        """Every circuit breaker with its state (closed, open, half-open) and figures (admin token)."""
        return {"breakers": await self.call(self.client.breakers())}

    async def reset_breaker(self, name: BreakerName) -> dict[str, Any]:
        """Close a circuit breaker so calls go through again (needs the admin token)."""
        await self.require_admin("reset_breaker")
        return await self.call(self.client.reset_breaker(name))

    async def cache_stats(self) -> dict[str, Any]:
        """Cache statistics per level: hits, misses, entries (admin token)."""
        return await self.call(self.client.cache_stats())

    async def list_dead_tasks(
        self, limit: Annotated[int, Field(ge=1, le=1000, description="At most this many, newest first.")] = 50
    ) -> dict[str, Any]:
        """Dead tasks (dead letters), newest first, each with the error that killed it."""
        return {"tasks": await self.call(self.client.list_dead(limit=limit))}

    async def replay_dead_task(self, task_id: TaskId) -> dict[str, Any]:
        """Submit a dead task again as a new task (needs the admin token). Returns the new id and status."""
        await self.require_admin("replay_dead_task")
        return await self.call(self.client.replay(task_id))

    # --- resources -------------------------------------------------------------------------------

    def config_resource(self) -> str:
        """The effective configuration (file, then HULK_* environment), secrets redacted, as JSON."""
        from hulk.config import ConfigError, load_settings, redacted

        try:
            settings = load_settings(self.options.config_path)
        except ConfigError as exc:
            raise ResourceError(str(exc)) from None
        connection = {
            "url": self.options.url,
            "token": "***" if self.options.token else "",
            "admin_token": "***" if self.options.admin_token or self.options.token else "",
            "config_file": str(self.options.config_path) if self.options.config_path else None,
        }
        return json.dumps({"hulk_mcp": connection, "settings": redacted(settings)}, indent=2, default=str)

    async def failures_resource(self) -> str:
        """The latest dead tasks (up to 50) with the reason each one died, as JSON."""
        try:
            dead = await self.client.list_dead(limit=50)
        except ClientError as exc:
            raise ResourceError(str(_tool_error(exc, self.options.url))) from None
        failures = [
            {
                "id": t.get("id"),
                "type": t.get("type"),
                "tenant": t.get("tenant"),
                "attempts": t.get("attempt"),
                "finished_at": t.get("finished_at"),
                "error": t.get("error"),
            }
            for t in dead
        ]
        return json.dumps({"count": len(failures), "failures": failures}, indent=2, default=str)


def build_server(options: McpOptions) -> MCPServer[Any]:
    """The MCP server with hulk's tools and resources, for `options`' instance."""
    tools = HulkTools(options)

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        try:
            yield None
        finally:
            await tools.aclose()

    server: MCPServer[Any] = MCPServer(
        "hulk",
        title="hulk task runtime",
        instructions=_INSTRUCTIONS,
        lifespan=lifespan,
    )
    server.add_tool(tools.submit_task, name="submit_task", annotations=_WRITE)
    server.add_tool(tools.get_task, name="get_task", annotations=_READ)
    server.add_tool(tools.cancel_task, name="cancel_task", annotations=_DESTRUCTIVE)
    server.add_tool(tools.runtime_status, name="runtime_status", annotations=_READ)
    server.add_tool(tools.list_breakers, name="list_breakers", annotations=_READ)
    server.add_tool(tools.reset_breaker, name="reset_breaker", annotations=_WRITE)
    server.add_tool(tools.cache_stats, name="cache_stats", annotations=_READ)
    server.add_tool(tools.list_dead_tasks, name="list_dead_tasks", annotations=_READ)
    server.add_tool(tools.replay_dead_task, name="replay_dead_task", annotations=_WRITE)
    server.resource(
        "hulk://config",
        name="config",
        title="Effective configuration",
        description="hulk's configuration (file, then HULK_* environment), secrets redacted.",
        mime_type="application/json",
    )(tools.config_resource)
    server.resource(
        "hulk://failures/recent",
        name="recent_failures",
        title="Recent failures",
        description="The latest dead tasks with the reason each one died.",
        mime_type="application/json",
    )(tools.failures_resource)
    return server


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="hulk-mcp",
        description="MCP server for operating a running hulk instance (tools: tasks, dead letters, "
        "breakers, cache, status).",
        epilog="examples:\n"
        "  hulk-mcp --url http://127.0.0.1:8080 --admin-token s3cret\n"
        "  HULK_URL=http://hulk:8080 hulk-mcp --transport streamable-http --port 8765\n"
        "  python -m hulk.mcp --config hulk.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=env("HULK_URL"), help="instance base URL (env HULK_URL)")
    parser.add_argument("--token", default=env("HULK_TOKEN"), help="bearer token (env HULK_TOKEN)")
    parser.add_argument(
        "--admin-token",
        default=env("HULK_ADMIN_TOKEN"),
        help="admin bearer token, enables state changes (env HULK_ADMIN_TOKEN; default: --token)",
    )
    parser.add_argument("--tenant", default=env("HULK_TENANT"), help="tenant header (env HULK_TENANT)")
    parser.add_argument("--config", type=Path, default=env("HULK_CONFIG"), help="configuration file (HULK_CONFIG)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http: address to bind")
    parser.add_argument("--port", type=int, default=8765, help="streamable-http: port (default 8765)")
    parser.add_argument("--path", default="/mcp", help="streamable-http: endpoint path (default /mcp)")
    return parser


def options_from_args(argv: Sequence[str] | None = None) -> tuple[McpOptions, argparse.Namespace]:
    """Parses the command line (and `HULK_*` variables) into options.

    Raises:
        SystemExit: a usage error (exit code 2), or a configuration file that does not load.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    url, token = args.url or None, args.token or None
    config_path: Path | None = Path(args.config) if args.config else None
    if config_path is not None and (url is None or token is None):
        from hulk.config import ConfigError, load_settings

        try:
            config_url, config_token = instance_from_settings(load_settings(config_path))
        except ConfigError as exc:
            parser.error(str(exc))
        url = url or config_url
        token = token or config_token
    url = url or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https://, got {url!r}")
    options = McpOptions(
        url=url,
        token=token,
        admin_token=args.admin_token or None,
        tenant=args.tenant or None,
        timeout=args.timeout,
        config_path=config_path,
    )
    return options, args


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `hulk-mcp` (and `python -m hulk.mcp`)."""
    options, args = options_from_args(argv)
    server = build_server(options)
    transport: Literal["stdio", "streamable-http"] = args.transport
    if transport == "stdio":
        server.run("stdio")
    else:  # pragma: no cover - exercised by hand; the tests drive stdio
        print(f"hulk-mcp: streamable HTTP on http://{args.host}:{args.port}{args.path}", file=sys.stderr)
        server.run("streamable-http", host=args.host, port=args.port, streamable_http_path=args.path)
