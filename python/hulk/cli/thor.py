"""thor: the operator's command line for a running hulk instance.

thor talks to an instance's HTTP API (`--url`/`HULK_URL`, `--token`/`HULK_TOKEN`, else the
configuration file's `server.*`, else http://127.0.0.1:8080) and reads NATS directly for what only NATS
knows: the instances' heartbeats and the streams' statistics.

Tables are for people; `--json` prints the same data as JSON for scripts. Exit codes: 0 ok, 1 the
operation failed (or the instance is not ready, or a task ended badly), 2 usage error, 3 the instance
(or NATS) cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hulk.cli._nats import DEFAULT_NATS_URL, NatsTarget, NatsUnavailable, instances, stream_report
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
from hulk.config import parse_duration

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "app", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

T = TypeVar("T")


def _examples(*lines: str) -> str:
    """An epilog listing example command lines (rich markup; brackets in them are escaped)."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  [cyan]{escape(line)}[/cyan]" for line in lines)


app = typer.Typer(
    name="thor",
    help=(
        "Operate a running hulk instance: status, tasks, dead letters, breakers, cache, streams, "
        "configuration, drain and a small benchmark.\n\n"
        "Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 cannot reach the instance."
    ),
    epilog=_examples(
        "thor status",
        "HULK_URL=http://hulk:8080 HULK_TOKEN=s3cret thor breakers list",
        "thor --json tasks dead | jq '.[].id'",
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    # A rich traceback would print local variables, tokens among them.
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(
    help="Submit, inspect, cancel and replay tasks; list dead letters.",
    epilog=_examples(
        "thor tasks submit echo --payload '{\"n\": 1}' --wait", "thor tasks dead", "thor tasks replay --all"
    ),
    no_args_is_help=True,
)
breakers_app = typer.Typer(
    help="List, reset and open circuit breakers (admin token).",
    epilog=_examples("thor breakers list", "thor breakers reset email"),
    no_args_is_help=True,
)
cache_app = typer.Typer(
    help="Cache statistics and flush (admin token).",
    epilog=_examples("thor cache stats", "thor cache flush --tenant acme"),
    no_args_is_help=True,
)
config_app = typer.Typer(
    help="Check or show the configuration file, secrets redacted.",
    epilog=_examples("thor config check hulk.yaml", "thor --config hulk.yaml config show"),
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")
app.add_typer(breakers_app, name="breakers")
app.add_typer(cache_app, name="cache")
app.add_typer(config_app, name="config")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


# --- where the instance is ---------------------------------------------------------------------


@dataclass(kw_only=True)
class State:
    """What the global options said, resolved into a target on first use."""

    url: str | None = None
    token: str | None = None
    admin_token: str | None = None
    tenant: str | None = None
    config_path: Path | None = None
    nats_urls: tuple[str, ...] = ()
    timeout: float = 10.0
    json: bool = False
    _settings: Any = field(default=None, repr=False)
    _settings_loaded: bool = field(default=False, repr=False)

    def settings(self) -> Any:
        """The configuration file's settings when one is named (`--config`, `HULK_CONFIG`), else None."""
        if self.config_path is None:
            return None
        if not self._settings_loaded:
            self._settings = load_config(self.config_path, self)
            self._settings_loaded = True
        return self._settings

    def resolve(self) -> tuple[str, str | None]:
        """The instance's URL and token: flags and environment first, then the configuration file."""
        url, token = self.url, self.token
        if url is None or token is None:
            settings = self.settings()
            if settings is not None:
                config_url, config_token = instance_from_settings(settings)
                url = url or config_url
                token = token or config_token
        url = url or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            fail(self, EXIT_USAGE, "usage", f"--url must start with http:// or https://, got {url!r}")
        return url, token

    def client(self, *, max_connections: int = 100) -> HulkClient:
        """A client of the instance (see `resolve`)."""
        url, token = self.resolve()
        return HulkClient(
            url,
            token=token,
            admin_token=self.admin_token or token,
            tenant=self.tenant,
            timeout=self.timeout,
            max_connections=max_connections,
        )

    def nats(self) -> NatsTarget:
        """Where NATS is: `--nats-url`/`HULK_NATS_URL`, then the configuration file's `nats.*`."""
        if self.nats_urls:
            return NatsTarget(urls=self.nats_urls, timeout=min(self.timeout, 5.0))
        settings = self.settings()
        if settings is None:
            return NatsTarget(urls=(DEFAULT_NATS_URL,), timeout=min(self.timeout, 5.0))
        n = settings.nats
        return NatsTarget(
            urls=tuple(n.urls),
            user=n.user or None,
            password=n.password.get_secret_value() or None,
            token=n.token.get_secret_value() or None,
            creds_file=n.creds_file or None,
            timeout=min(self.timeout, 5.0),
        )


def load_config(path: Path | None, state: State) -> Any:
    """Reads a configuration file with `hulk.config.load_settings`; a bad one is a usage error.

    Args:
        path: the YAML file (None: `HULK_CONFIG`, or defaults).
        state: where to report a failure.
    """
    try:
        from hulk.config import ConfigError, load_settings
    except ImportError as exc:  # pragma: no cover - hulk.config ships with hulk
        fail(state, EXIT_FAILED, "config_unavailable", f"hulk.config cannot be imported: {exc}")
    try:
        return load_settings(path)
    except ConfigError as exc:
        fail(state, EXIT_USAGE, "invalid_config", str(exc))


def _state(ctx: typer.Context, json_output: bool = False) -> State:
    state = ctx.find_object(State)
    if state is None:  # pragma: no cover - the callback always sets it
        state = State()
        ctx.obj = state
    if json_output:
        state.json = True
    return state


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="HULK_URL", help="Base URL of the instance's HTTP API.", show_envvar=True),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="HULK_TOKEN", help="Bearer token (tenant or admin).", show_envvar=True),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="HULK_ADMIN_TOKEN",
            help="Bearer token for admin routes when it differs from --token.",
            show_envvar=True,
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", envvar="HULK_TENANT", help="Tenant header, for instances without tenant tokens."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="HULK_CONFIG",
            help="Configuration file: its server.* and nats.* say where the instance and NATS are.",
            show_envvar=True,
        ),
    ] = None,
    nats_url: Annotated[
        list[str] | None,
        typer.Option("--nats-url", envvar="HULK_NATS_URL", help="NATS server URL (repeatable).", show_envvar=True),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, max=600.0, help="Seconds per request.")] = 10.0,
    json_output: JsonOpt = False,
) -> None:
    """Operate a running hulk instance."""
    ctx.obj = State(
        url=url or None,
        token=token or None,
        admin_token=admin_token or None,
        tenant=tenant or None,
        config_path=config,
        nats_urls=tuple(nats_url or ()),
        timeout=timeout,
        json=json_output,
    )


# --- output --------------------------------------------------------------------------------------


def _out() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Writes `data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def fail(
    state: State, exit_code: int, kind: str, message: str, /, *, hint: str | None = None, **extra: Any
) -> NoReturn:
    """Reports an error on stderr (JSON with `--json`, the `extra` fields included) and exits with `exit_code`."""
    if state.json:
        body: dict[str, Any] = {"kind": kind, "message": message, **extra}
        if hint:
            body["hint"] = hint
        sys.stderr.write(json.dumps({"error": body}, default=str) + "\n")
    else:
        err = _err()
        err.print(f"[bold red]error:[/bold red] {escape(message)}")
        if hint:
            err.print(f"[dim]hint: {escape(hint)}[/dim]")
    raise typer.Exit(exit_code)


def _fail_exc(state: State, exc: BaseException) -> NoReturn:
    if isinstance(exc, Unreachable):
        fail(
            state,
            EXIT_UNREACHABLE,
            "unreachable",
            str(exc),
            hint="is it running? set --url or HULK_URL (or server.host/port in --config)",
            url=exc.url,
        )
    if isinstance(exc, NatsUnavailable):
        fail(state, EXIT_UNREACHABLE, "nats_unreachable", str(exc), hint="set --nats-url or HULK_NATS_URL", url=exc.url)
    if isinstance(exc, ApiError):
        hint = None
        if exc.needs_admin:
            hint = "this needs the admin token: --token/HULK_TOKEN or --admin-token/HULK_ADMIN_TOKEN"
        elif exc.retry_after is not None:
            hint = f"retry after {exc.retry_after:g}s"
        message = str(exc) + (f" (request {exc.request_id})" if exc.request_id else "")
        fail(state, EXIT_FAILED, "api", message, hint=hint, **exc.to_dict())
    if isinstance(exc, RequestTimeout):
        fail(state, EXIT_FAILED, "timeout", str(exc), hint="raise --timeout")
    fail(state, EXIT_USAGE, "usage", str(exc))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs `coro` to completion on a fresh event loop in a short-lived thread and returns its result.

    Why a thread: on CPython 3.11, once an anyio cancel scope is cancelled from a child task (as
    `anyio.connect_tcp` does on every connection httpx opens), tracers stop seeing the calling
    frames; coverage.py then misses every line of the command after its first request. A thread of
    its own keeps the command's frames out of that stack. It costs one thread per command.
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(coro)))
        except BaseException as exc:  # handed to the caller's thread as is
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="thor-loop", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def run(state: State, action: Callable[[HulkClient], Awaitable[T]], *, max_connections: int = 100) -> T:
    """Runs `action` with a client of the instance, mapping errors to messages and exit codes."""
    client = state.client(max_connections=max_connections)

    async def go() -> T:
        async with client:
            return await action(client)

    try:
        return run_async(go())
    except (ClientError, NatsUnavailable, ValueError) as exc:
        _fail_exc(state, exc)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def kv_table(title: str, data: Mapping[str, Any]) -> Table:
    """A two-column table of `data`, nested keys flattened with dots; `*_at` epochs shown as local times."""
    table = Table(
        title=title or None,
        title_style="bold",
        show_header=False,
        title_justify="left",
        box=None,
        pad_edge=False,
        min_width=len(title),
    )
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in _flatten(data):
        shown = _when(value) if key.endswith("_at") else _show(value)
        table.add_row(escape(key), escape(shown))
    return table


def rows_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Table:
    """A table with one row per mapping; `columns` first, then any other keys the rows share."""
    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in extra:
                extra.append(key)
    table = Table(title=title, title_justify="left")
    for column in (*columns, *extra):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(_show(row.get(c))) for c in (*columns, *extra)))
    return table


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(f"expected {exc}, got {value!r}") from None


def _json_value(raw: str) -> Any:
    """`--payload`: inline JSON, `@path` for a file, `-` for stdin."""
    if raw == "-":
        raw = sys.stdin.read()
    elif raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {raw[1:]!r}: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON ({exc}): {raw[:80]!r}") from None


# --- status --------------------------------------------------------------------------------------


async def _optional(call: Awaitable[T]) -> T | dict[str, Any]:
    """The answer of `call`, or `{"error": ...}` when the instance refused (e.g. no admin token)."""
    try:
        return await call
    except ApiError as exc:
        return {"error": exc.to_dict()}


@app.command(
    epilog=_examples("thor status", "thor status --json | jq .ready.ready", "thor status --no-nats --heartbeats 5m")
)
def status(
    ctx: typer.Context,
    nats_too: Annotated[bool, typer.Option("--nats/--no-nats", help="Read instances' heartbeats from NATS.")] = True,
    window: Annotated[
        str, typer.Option("--heartbeats", help="How far back to look for heartbeats, e.g. 60s, 5m.")
    ] = "60s",
    json_output: JsonOpt = False,
) -> None:
    """Show the instance's health, readiness, queue, workers, breakers and cache, and every instance seen.

    Exits 1 when the instance is not ready, 3 when it cannot be reached.
    """
    state = _state(ctx, json_output)
    seconds = _duration(window)

    async def gather(client: HulkClient) -> dict[str, Any]:
        report: dict[str, Any] = {"url": client.url, "health": await client.health()}
        report["ready"] = await client.ready()
        report["runtime"] = await _optional(client.runtime())
        report["breakers"] = await _optional(client.breakers())
        report["cache"] = await _optional(client.cache_stats())
        if nats_too:
            target = state.nats()
            try:
                report["instances"] = await instances(target, window=seconds)
            except NatsUnavailable as exc:
                report["instances"] = {"error": {"message": str(exc), "url": exc.url}}
        return report

    report = run(state, gather)
    ready = bool(report["ready"].get("ready"))
    if state.json:
        print_json(report)
    else:
        _render_status(report, ready)
    raise typer.Exit(EXIT_OK if ready else EXIT_FAILED)


def _error_line(section: str, value: Mapping[str, Any]) -> str:
    error = value["error"]
    message = error.get("message", "")
    if error.get("status") in (401, 403):
        message += " (needs the admin token)"
    return f"[yellow]{section}: {escape(message)}[/yellow]"


def _render_status(report: Mapping[str, Any], ready: bool) -> None:
    out = _out()
    verdict = "[green]ready[/green]" if ready else "[red]NOT READY[/red]"
    out.print(f"[bold]hulk[/bold] at {escape(report['url'])}: live, {verdict}")
    checks = report["ready"].get("checks") or {}
    if checks:
        out.print(kv_table("readiness checks", checks))
    runtime = report["runtime"]
    if "error" in runtime:
        out.print(_error_line("runtime", runtime))
    else:
        out.print(kv_table("runtime", runtime))
    found = report.get("instances")
    if isinstance(found, dict):
        out.print(f"[yellow]instances: {escape(found['error']['message'])}[/yellow]")
    elif isinstance(found, list):
        if found:
            out.print(rows_table("instances (heartbeats)", found, ["instance", "alive", "seen_ago"]))
        else:
            out.print("[dim]instances: no heartbeat seen in the window[/dim]")
    breakers = report["breakers"]
    if isinstance(breakers, dict):
        out.print(_error_line("breakers", breakers))
    else:
        out.print(rows_table("breakers", breakers, ["name", "state"]))
    cache = report["cache"]
    if "error" in cache:
        out.print(_error_line("cache", cache))
    else:
        out.print(kv_table("cache", cache))


# --- tasks ---------------------------------------------------------------------------------------


def _render_task(view: Mapping[str, Any]) -> None:
    status_ = str(view.get("status", "?"))
    colour = {"succeeded": "green", "dead": "red", "cancelled": "yellow"}.get(status_, "cyan")
    out = _out()
    out.print(f"task [bold]{escape(str(view.get('id')))}[/bold]: [{colour}]{escape(status_)}[/{colour}]")
    rest = {k: v for k, v in view.items() if k not in ("id", "status")}
    if rest:
        out.print(kv_table("", rest))


@tasks_app.command(
    "submit",
    epilog=_examples(
        'thor tasks submit echo --payload \'{"hello": "world"}\'',
        "thor tasks submit resize --payload @job.json --wait --wait-for 2m",
        "echo '{\"n\": 1}' | thor tasks submit echo --payload - --json",
    ),
)
def tasks_submit(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Argument(metavar="TYPE", help="A registered task type.")],
    payload: Annotated[
        str, typer.Option("--payload", "-p", help="JSON payload; @file reads a file, - reads stdin.")
    ] = "null",
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the task to finish.")] = False,
    wait_for: Annotated[str, typer.Option("--wait-for", help="How long --wait waits, e.g. 30s, 5m.")] = "30s",
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key: a resubmission is the same task.")] = None,
    delay: Annotated[str | None, typer.Option("--delay", help="Run no sooner than this, e.g. 10s.")] = None,
    task_timeout: Annotated[str | None, typer.Option("--task-timeout", help="Handler time limit, e.g. 30s.")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", min=0, max=100, help="Retries.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", min=0, max=9, help="0 (default) to 9.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Submit one task; with --wait, wait for its result.

    With --wait, exits 0 when the task succeeded and 1 when it died, was cancelled or is still running.
    """
    state = _state(ctx, json_output)
    body = _json_value(payload)
    waited = _duration(wait_for) if wait else None
    delay_s = _duration(delay) if delay is not None else None
    timeout_s = _duration(task_timeout) if task_timeout is not None else None

    async def submit(client: HulkClient) -> dict[str, Any]:
        view = await client.submit(
            task_type,
            body,
            wait=min(waited, MAX_WAIT) if waited is not None else None,
            idempotency_key=key,
            delay=delay_s,
            timeout=timeout_s,
            max_retries=max_retries,
            priority=priority,
        )
        if waited is not None:
            view = await client.follow(view, waited)
        return view

    view = run(state, submit)
    if state.json:
        print_json(view)
    else:
        _render_task(view)
    if waited is not None and view.get("status") != "succeeded":
        if view.get("status") not in TERMINAL_STATES and not state.json:
            _err().print(f"[yellow]still {escape(str(view.get('status')))} after {wait_for}[/yellow]")
        raise typer.Exit(EXIT_FAILED)


@tasks_app.command("get", epilog=_examples("thor tasks get 01J9Z3", "thor tasks get 01J9Z3 --wait 10s --json"))
def tasks_get(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task's id.")],
    wait: Annotated[
        str | None, typer.Option("--wait", "-w", help="Wait up to this long for a terminal state, e.g. 10s.")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show one task: status, attempts, result or error."""
    state = _state(ctx, json_output)
    waited = _duration(wait) if wait is not None else None

    async def get(client: HulkClient) -> dict[str, Any]:
        view = await client.get_task(task_id, wait=min(waited, MAX_WAIT) if waited else None)
        if waited:
            view = await client.follow(view, waited)
        return view

    view = run(state, get)
    if state.json:
        print_json(view)
    else:
        _render_task(view)


@tasks_app.command("cancel", epilog=_examples("thor tasks cancel 01J9Z3"))
def tasks_cancel(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task's id.")],
    json_output: JsonOpt = False,
) -> None:
    """Cancel a queued, scheduled or running task."""
    state = _state(ctx, json_output)
    view = run(state, lambda client: client.cancel_task(task_id))
    if state.json:
        print_json(view)
    else:
        _render_task(view)


def _reason(task: Mapping[str, Any]) -> str:
    error = task.get("error")
    if isinstance(error, Mapping):
        kind = error.get("type") or error.get("code") or error.get("kind")
        message = error.get("message") or error.get("reason") or ""
        return f"{kind}: {message}" if kind and message else str(kind or message or json.dumps(error))
    if error:
        return str(error)
    return str(task.get("reason") or "-")


def _when(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return _show(value)


@tasks_app.command("dead", epilog=_examples("thor tasks dead", "thor tasks dead --limit 500 --json"))
def tasks_dead(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="At most this many.")] = 100,
    json_output: JsonOpt = False,
) -> None:
    """List dead tasks (dead letters), newest first, with the reason each one died.

    With the admin token, every tenant's; otherwise your tenant's.
    """
    state = _state(ctx, json_output)
    dead = run(state, lambda client: client.list_dead(limit=limit))
    if state.json:
        print_json(dead)
        return
    if not dead:
        _out().print("no dead tasks")
        return
    table = Table(title=f"dead tasks ({len(dead)})", title_justify="left")
    for column in ("id", "type", "tenant", "attempts", "died", "reason"):
        table.add_column(column, overflow="fold")
    for task in dead:
        table.add_row(
            escape(str(task.get("id"))),
            escape(str(task.get("type", "-"))),
            escape(str(task.get("tenant", "-"))),
            escape(_show(task.get("attempt"))),
            escape(_when(task.get("finished_at"))),
            escape(_reason(task)),
        )
    _out().print(table)


@tasks_app.command(
    "replay",
    epilog=_examples("thor tasks replay 01J9Z3", "thor tasks replay --all", "thor tasks replay --all --yes --json"),
)
def tasks_replay(
    ctx: typer.Context,
    task_id: Annotated[str | None, typer.Argument(metavar="ID", help="The dead task to replay.")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead task (up to --limit).")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="With --all: at most this many.")] = 1000,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Submit dead tasks again, one (ID) or all (--all), after confirmation.

    Each replay is a new task with a new id. Exits 1 when any replay failed.
    """
    state = _state(ctx, json_output)
    if (task_id is None) == (not replay_all):
        fail(state, EXIT_USAGE, "usage", "give a dead task's ID or --all (not both)")
    if task_id is not None:
        ids = [task_id]
    else:
        ids = [str(t["id"]) for t in run(state, lambda client: client.list_dead(limit=limit))]
        if not ids:
            if state.json:
                print_json([])
            else:
                _out().print("no dead tasks to replay")
            return
    question = f"Replay dead task {ids[0]}?" if task_id is not None else f"Replay {len(ids)} dead task(s)?"
    if not yes and not typer.confirm(question, err=True):
        fail(state, EXIT_FAILED, "aborted", "nothing replayed")

    async def replay(client: HulkClient) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for dead_id in ids:
            try:
                accepted = await client.replay(dead_id)
            except ApiError as exc:
                if task_id is not None:
                    raise
                results.append({"dead_id": dead_id, "error": str(exc)})
            else:
                results.append({"dead_id": dead_id, "id": accepted.get("id"), "status": accepted.get("status")})
        return results

    results = run(state, replay)
    if state.json:
        print_json(results)
    else:
        _out().print(rows_table("replayed", results, ["dead_id", "id", "status"]))
    if any("error" in r for r in results):
        raise typer.Exit(EXIT_FAILED)


# --- breakers, cache, drain ----------------------------------------------------------------------


@breakers_app.command("list", epilog=_examples("thor breakers list", "thor breakers list --json"))
def breakers_list(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List every circuit breaker with its state and figures."""
    state = _state(ctx, json_output)
    found = run(state, lambda client: client.breakers())
    if state.json:
        print_json(found)
    elif not found:
        _out().print("no breakers")
    else:
        _out().print(rows_table("breakers", [dict(_flatten(b)) for b in found], ["name", "state"]))


@breakers_app.command("reset", epilog=_examples("thor breakers reset email"))
def breakers_reset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The breaker's name.")],
    json_output: JsonOpt = False,
) -> None:
    """Close a breaker: calls go through again."""
    state = _state(ctx, json_output)
    result = run(state, lambda client: client.reset_breaker(name))
    if state.json:
        print_json(result)
    else:
        _out().print(f"breaker [bold]{escape(name)}[/bold] reset (closed)")


@breakers_app.command("open", epilog=_examples("thor breakers open payments"))
def breakers_open(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The breaker's name.")],
    json_output: JsonOpt = False,
) -> None:
    """Force a breaker open: calls are refused until it is reset or its cool-down ends."""
    state = _state(ctx, json_output)
    result = run(state, lambda client: client.open_breaker(name))
    if state.json:
        print_json(result)
    else:
        _out().print(f"breaker [bold]{escape(name)}[/bold] forced open")


@cache_app.command("stats", epilog=_examples("thor cache stats", "thor cache stats --json"))
def cache_stats(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show cache statistics per level (L1, L2, L3)."""
    state = _state(ctx, json_output)
    stats = run(state, lambda client: client.cache_stats())
    if state.json:
        print_json(stats)
    else:
        _out().print(kv_table("cache", stats))


@cache_app.command("flush", epilog=_examples("thor cache flush", "thor cache flush --tenant acme --yes"))
def cache_flush(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Flush only this tenant's namespace.")] = None,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Empty the cache: every tenant's, or one tenant's."""
    state = _state(ctx, json_output)
    what = f"tenant {tenant!r}'s cache" if tenant else "the whole cache"
    if not yes and not typer.confirm(f"Flush {what}?", err=True):
        fail(state, EXIT_FAILED, "aborted", "nothing flushed")
    removed = run(state, lambda client: client.cache_flush(tenant=tenant))
    if state.json:
        print_json({"flushed": removed, "tenant": tenant})
    else:
        _out().print(f"flushed {what}: {removed} entries removed")


@app.command(epilog=_examples("thor drain", "thor drain --yes --json"))
def drain(ctx: typer.Context, yes: YesOpt = False, json_output: JsonOpt = False) -> None:
    """Drain the instance: readiness turns false, intake stops, running tasks finish."""
    state = _state(ctx, json_output)
    if not yes and not typer.confirm(f"Drain {state.resolve()[0]}? It stops taking tasks.", err=True):
        fail(state, EXIT_FAILED, "aborted", "not drained")
    result = run(state, lambda client: client.drain())
    if state.json:
        print_json(result)
    else:
        _out().print("draining: readiness is now false and intake has stopped")


# --- streams -------------------------------------------------------------------------------------


@app.command(epilog=_examples("thor streams", "thor streams --all --json", "thor --nats-url nats://n1:4222 streams"))
def streams(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Every stream, not only hulk's (HULK_*).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show JetStream streams: messages, bytes, consumers, pending and redelivered counts.

    Reads NATS directly (--nats-url, HULK_NATS_URL, or nats.urls of --config). Exits 3 when NATS
    cannot be reached.
    """
    state = _state(ctx, json_output)
    target = state.nats()
    try:
        report = run_async(stream_report(target, prefix="" if show_all else "HULK_"))
    except NatsUnavailable as exc:
        _fail_exc(state, exc)
    if state.json:
        print_json(report)
        return
    if not report:
        _out().print("no streams" + ("" if show_all else " named HULK_* (--all shows every stream)"))
        return
    table = Table(title=f"streams at {escape(target.label)}", title_justify="left")
    for column in ("stream", "messages", "bytes", "consumers", "pending", "redelivered", "subjects"):
        table.add_column(column, justify="right" if column not in ("stream", "subjects") else "left")
    for s in report:
        table.add_row(
            escape(s["name"]),
            str(s["messages"]),
            _human_bytes(s["bytes"]),
            str(s["consumers"]),
            str(s["pending"]),
            str(s["redelivered"]),
            escape(", ".join(s["subjects"])),
        )
    out = _out()
    out.print(table)
    consumers = [{"stream": s["name"], **c} for s in report for c in s["consumer_details"]]
    if consumers:
        out.print(rows_table("consumers", consumers, ["stream", "name", "pending", "ack_pending", "redelivered"]))


# --- config --------------------------------------------------------------------------------------


def _config_path(state: State, path: Path | None) -> Path | None:
    return path if path is not None else state.config_path


@config_app.command("check", epilog=_examples("thor config check hulk.yaml", "HULK_CONFIG=hulk.yaml thor config check"))
def config_check(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(metavar="FILE", help="The file (default: --config).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Validate a configuration file and the HULK_* environment: every bad key is named. Exits 1 if invalid."""
    state = _state(ctx, json_output)
    from hulk.config import ConfigError, load_settings

    file = _config_path(state, path)
    try:
        load_settings(file)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        if state.json:
            print_json({"valid": False, "file": str(file) if file else None, "problems": problems})
        else:
            err = _err()
            err.print(f"[bold red]invalid configuration[/bold red] ({escape(str(file or 'defaults'))}):")
            for problem in problems:
                err.print(f"  - {escape(problem)}")
        raise typer.Exit(EXIT_FAILED) from None
    if state.json:
        print_json({"valid": True, "file": str(file) if file else None, "problems": []})
    else:
        _out().print(f"[green]configuration OK[/green] ({escape(str(file or 'defaults and environment'))})")


@config_app.command("show", epilog=_examples("thor config show hulk.yaml", "thor config show --json | jq .nats"))
def config_show(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(metavar="FILE", help="The file (default: --config).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the effective configuration (file, then HULK_* environment), secrets redacted."""
    state = _state(ctx, json_output)
    from hulk.config import redacted

    settings = load_config(_config_path(state, path), state)
    data = redacted(settings)
    if state.json:
        print_json(data)
    else:
        _out().print(kv_table("effective configuration", data))


# --- bench ---------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of sorted values, nearest-rank; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class BenchResult:
    """What `thor bench` measured."""

    count: int
    concurrency: int
    elapsed: float
    latencies: list[float]
    statuses: Counter[str]
    errors: Counter[str]

    def summary(self) -> dict[str, Any]:
        """Throughput, latency percentiles in milliseconds, outcomes."""
        lat = sorted(self.latencies)
        ms = {f"p{q:g}": round(percentile(lat, q) * 1000, 3) for q in (50, 90, 99, 99.9)}
        ms["max"] = round(lat[-1] * 1000, 3) if lat else 0.0
        ms["mean"] = round(sum(lat) / len(lat) * 1000, 3) if lat else 0.0
        return {
            "count": self.count,
            "concurrency": self.concurrency,
            "elapsed_s": round(self.elapsed, 3),
            "throughput_per_s": round(self.count / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "latency_ms": ms,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
        }


@app.command(
    epilog=_examples(
        "thor bench --type echo --count 1000 --concurrency 32",
        "thor bench --count 10000 --concurrency 64 --no-wait --json",
    )
)
def bench(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Option("--type", "-t", help="Task type to submit.")] = "echo",
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=10_000_000, help="Tasks to submit.")] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=1024, help="In flight at once.")] = 16,
    payload: Annotated[str, typer.Option("--payload", "-p", help="JSON payload of each task.")] = "{}",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Measure until each task finished (--wait) or only until it is accepted."
        ),
    ] = True,
    wait_for: Annotated[str, typer.Option("--wait-for", help="Longest wait per task (at most 60s).")] = "30s",
    json_output: JsonOpt = False,
) -> None:
    """Submit N tasks, C at a time, with a progress bar; print throughput and latency percentiles.

    Latency is from submission to the task's end with --wait (the default), to its acceptance with
    --no-wait. Exits 1 when any task failed or was refused.
    """
    state = _state(ctx, json_output)
    body = _json_value(payload)
    per_task = min(_duration(wait_for), MAX_WAIT) if wait else None
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    progress = Progress(
        TextColumn("[bold]bench[/bold] {task.fields[kind]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err(),
        disable=state.json,
        transient=False,
    )

    async def one(client: HulkClient) -> None:
        started = time.perf_counter()
        try:
            answer = await client.submit(task_type, body, wait=per_task)
            if per_task is not None and answer.get("status") not in TERMINAL_STATES:
                answer = await client.follow(answer, per_task - (time.perf_counter() - started))
        except ApiError as exc:
            errors[f"{exc.status} {exc.code}"] += 1
        except RequestTimeout:
            errors["timeout"] += 1
        else:
            latencies.append(time.perf_counter() - started)
            st = str(answer.get("status"))
            statuses[st if per_task is None or st in TERMINAL_STATES else "unfinished"] += 1

    async def drive(client: HulkClient) -> float:
        todo = iter(range(count))
        job = progress.add_task("submit", total=count, kind=task_type)

        async def worker() -> None:
            for _ in todo:
                await one(client)
                progress.advance(job)

        started = time.perf_counter()
        with progress:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(concurrency, count)):
                        group.create_task(worker())
            except ExceptionGroup as failed:
                # One worker could not reach the instance: the others were cancelled; report that one.
                raise failed.exceptions[0] from None
        return time.perf_counter() - started

    elapsed = run(state, drive, max_connections=concurrency)
    summary = BenchResult(count, concurrency, elapsed, latencies, statuses, errors).summary()
    if state.json:
        print_json(summary)
    else:
        _render_bench(summary, wait)
    bad = sum(errors.values())
    if per_task is not None:
        bad += sum(n for st, n in statuses.items() if st != "succeeded")
    raise typer.Exit(EXIT_FAILED if bad else EXIT_OK)


def _render_bench(summary: Mapping[str, Any], wait: bool) -> None:
    out = _out()
    what = "submit → finished" if wait else "submit → accepted"
    out.print(
        f"[bold]{summary['count']}[/bold] tasks, concurrency {summary['concurrency']}, "
        f"{summary['elapsed_s']:.2f}s: [bold green]{summary['throughput_per_s']:.1f} tasks/s[/bold green]"
    )
    table = Table(title=f"latency ({what}), ms", title_justify="left")
    for key in summary["latency_ms"]:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:.2f}" for v in summary["latency_ms"].values()))
    out.print(table)
    out.print(kv_table("outcomes", {"statuses": summary["statuses"], "errors": summary["errors"] or "none"}))


def main() -> None:
    """Entry point of the `thor` command."""
    app(prog_name="thor")


if __name__ == "__main__":  # pragma: no cover
    main()
