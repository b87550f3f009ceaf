"""The `hulk` command: run the service, check configuration, tour the native core.

Built on typer (click underneath): typed options, `--help` everywhere, shell completion. Exit codes:
0 ok, 1 the operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from hulk._native import __version__, build_profile

app = typer.Typer(
    name="hulk",
    help="hulk: a Python task runtime whose hot path is Rust.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate or print the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (default: $HULK_CONFIG, else built-in defaults)."),
]


def _load(path: Path | None) -> object:
    from hulk.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.", min=1, max=65535)] = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
) -> None:
    """Run the service: HTTP API, worker pool, JetStream intake, scheduler (embedded NATS by default).

    Examples:
        hulk serve
        hulk serve --config config.yaml --port 9000
    """
    from hulk.config import Settings
    from hulk.service import run

    settings = _load(config)
    assert isinstance(settings, Settings)
    overrides: dict[str, object] = {}
    if port is not None:
        overrides["port"] = port
    if host is not None:
        overrides["host"] = host
    if overrides:
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=overrides)})
    raise typer.Exit(run(settings))


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="The YAML file to validate.")]) -> None:
    """Validate FILE (and HULK_* environment overrides); exit 2 with every problem listed.

    Example:
        hulk config check config.yaml
    """
    if not file.exists():
        typer.echo(f"configuration error: {file}: no such file", err=True)
        raise typer.Exit(2)
    _load(file)
    typer.echo(f"{file}: ok")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration as JSON, secrets redacted.

    Example:
        HULK_ENGINE__WORKERS=8 hulk config show
    """
    from hulk.config import Settings, redacted

    settings = _load(config)
    assert isinstance(settings, Settings)
    typer.echo(json.dumps(redacted(settings), indent=2, default=str))


@app.command()
def version() -> None:
    """Print the version and the native build profile."""
    typer.echo(f"hulk {__version__} ({build_profile} build, Python {sys.version.split()[0]})")


@app.command()
def demo() -> None:
    """A short tour of the native core (queue, backoff scheduler, breaker, L1 cache)."""
    from hulk.demo import main

    main()


def main() -> None:
    """Console-script entry point."""
    app()
