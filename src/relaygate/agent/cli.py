"""`relaygate sandbox ...`: entry points only; the logic lives in `relaygate.agent.sandbox`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from relaygate.agent.sandbox.bwrap import sandbox_unavailable_reason
from relaygate.agent.sandbox.config import SandboxConfig, load_sandbox_config

app = typer.Typer(help="The sandboxed notebook tool (an MCP server).", no_args_is_help=True)


async def _serve(config: SandboxConfig, port: int | None, sandboxed: bool) -> None:
    # jupyter_client/zmq/tornado and asyncpg: imported only to serve, never by `relaygate serve`
    from relaygate.agent.sandbox.pool import KernelPool
    from relaygate.agent.sandbox.state import open_state_store

    pool = KernelPool(config, open_state_store(config.database_url), sandboxed=sandboxed)
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM cancels the server so the kernels are stopped and their run directories removed
    # (uvicorn re-raises the signal after its own graceful shutdown; this handler catches it).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    from relaygate.agent.sandbox.server import build_server  # the MCP SDK: imported only to serve

    await pool.start()
    try:
        server = build_server(pool, port=port or 8000)
        if port is None:
            await server.run_stdio_async()
        else:
            await server.run_streamable_http_async()
    finally:
        await pool.close()


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with a `sandbox:` section.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Serve streamable HTTP at http://127.0.0.1:PORT/mcp (default: stdio).")
    ] = None,
    insecure_no_sandbox: Annotated[
        bool, typer.Option("--insecure-no-sandbox", help="Run kernels without bubblewrap isolation (development only).")
    ] = False,
) -> None:
    """Serve notebook_run_cell / notebook_reset over MCP, one sandboxed kernel per thread."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        settings = load_sandbox_config(config)
    except Exception as exc:  # pydantic / YAML errors: show them, not a traceback
        typer.echo(f"invalid sandbox config {config}: {exc}", err=True)
        raise typer.Exit(2) from exc
    sandboxed = not insecure_no_sandbox
    if sandboxed:
        reason = sandbox_unavailable_reason(settings.python)
        if reason is not None:
            typer.echo(f"refusing to start: {reason}. Use --insecure-no-sandbox to run kernels "
                       "without isolation (never with untrusted code).", err=True)
            raise typer.Exit(3)
    else:
        typer.echo("WARNING: kernels run WITHOUT a sandbox (--insecure-no-sandbox)", err=True)
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(_serve(settings, port, sandboxed))


@app.command()
def check(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with a `sandbox:` section.")] = None,
) -> None:
    """Say whether bubblewrap isolation works on this host."""
    settings = load_sandbox_config(config)
    reason = sandbox_unavailable_reason(settings.python)
    typer.echo("sandbox: ok" if reason is None else f"sandbox: unavailable: {reason}")
    raise typer.Exit(0 if reason is None else 1)


if __name__ == "__main__":
    app()
