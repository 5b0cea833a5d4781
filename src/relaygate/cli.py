"""Command-line entry points only; the work lives in the modules they call."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

from relaygate.agent.cli import app as sandbox_app
from relaygate.chaos.cli import chaos_command
from relaygate.config import ConfigError, default_config, load_config
from relaygate.config.models import GatewayConfig
from relaygate.keys.cli import app as keys_app
from relaygate.mock_upstream.cli import mock_upstream_command
from relaygate.usage.cli import usage_command

app = typer.Typer(help="relaygate: a self-hosted LLM gateway and agent-reliability toolkit.",
                  no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Work with config files.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _config_path(config: Path | None) -> Path | None:
    return config or (Path(os.environ["RELAYGATE_CONFIG"]) if os.environ.get("RELAYGATE_CONFIG") else None)


def _load(config: Path | None) -> GatewayConfig:
    path = _config_path(config)
    warnings: list[str] = []
    try:
        cfg = load_config(path, warnings) if path else default_config()
    except ConfigError as exc:
        typer.echo(f"invalid config {exc.source}:", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    return cfg


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file (default: $RELAYGATE_CONFIG "
                                       "or the embedded default: SQLite, in-memory state, the mock provider)."),
    host: str | None = typer.Option(None, help="Bind address (overrides server.host)."),
    port: int | None = typer.Option(None, help="Port (overrides server.port)."),
    workers: int | None = typer.Option(None, help="Worker processes sharing the port (SO_REUSEPORT)."),
    log_level: str = typer.Option("info", help="debug, info, warning, error."),
) -> None:
    """Run the gateway."""
    from relaygate.observability.logs import setup_logging
    from relaygate.server.run import ensure_master_key
    from relaygate.server.run import serve as run_server

    setup_logging(log_level)
    cfg = _load(config)
    if host:
        cfg.server.host = host
    if port:
        cfg.server.port = port
    if workers:
        cfg.server.workers = workers
    key_file = ensure_master_key(cfg)
    if key_file:
        typer.echo(f"no master key configured: using the one in {key_file} "
                   f"(set RELAYGATE_MASTER_KEY or server.master_key to choose your own)", err=True)
    typer.echo(f"relaygate on http://{cfg.server.host}:{cfg.server.port} "
               f"routes: {', '.join(sorted(cfg.routes)) or '-'}", err=True)
    run_server(cfg, cfg.server.workers, _config_path(config))


@config_app.command("validate")
def config_validate(
    file: Path = typer.Argument(..., help="The YAML config to check."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check a config file; exit 1 with one `path: problem` line per error."""
    warnings: list[str] = []
    try:
        cfg = load_config(file, warnings)
    except ConfigError as exc:
        if as_json:
            typer.echo(json.dumps({"valid": False, "errors": exc.problems, "warnings": warnings}))
        else:
            typer.echo(f"{file}: invalid", err=True)
            for problem in exc.problems:
                typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"valid": True, "errors": [], "warnings": warnings,
                               "providers": sorted(cfg.providers), "routes": sorted(cfg.routes)}))
        return
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{file}: ok ({len(cfg.providers)} providers, {len(cfg.routes)} routes)")


app.command("mock-upstream", help="Run a fake LLM upstream that speaks every provider's format.")(
    mock_upstream_command)
app.command("chaos", help="Send N requests through a running gateway and print failure stats.")(chaos_command)
app.add_typer(keys_app, name="keys", help="Create, list, show, revoke and rotate virtual keys.")
app.add_typer(sandbox_app, name="sandbox", help="The sandboxed notebook tool served over MCP.")
app.command("usage", help="Spend and tokens grouped by key, team, user, model, provider or day.")(usage_command)


def main() -> None:
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
