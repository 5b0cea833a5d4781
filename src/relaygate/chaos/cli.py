"""`relaygate chaos`: drive N requests through a running gateway and print what happened."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson
import typer

from relaygate.chaos.load import ChaosSettings, ChaosStats, RequestOutcome, run_chaos

if TYPE_CHECKING:
    from rich.table import Table


def chaos_command(
    gateway: str = typer.Option(..., "--gateway", help="Gateway base URL, e.g. http://127.0.0.1:8080."),
    requests: int = typer.Option(..., "--requests", min=0, help="How many requests to send."),
    concurrency: int = typer.Option(10, "--concurrency", min=1, help="Requests in flight at once."),
    model: str = typer.Option("gpt-4o", "--model", help="Model (route name) to ask for."),
    stream: bool = typer.Option(False, "--stream", help="Stream the answers."),
    wire_format: str = typer.Option("openai", "--format", help="Inbound format: openai or anthropic."),
    key: str | None = typer.Option(
        None, "--key", envvar="RELAYGATE_MASTER_KEY", help="Key to send (default $RELAYGATE_MASTER_KEY)."
    ),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Per-request timeout in seconds."),
    allow_cache: bool = typer.Option(
        False, "--allow-cache", help="Let the gateway's cache answer (sent with no-cache by default)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as one JSON object."),
) -> None:
    """Send requests through a gateway and print success, failure and fallback rates."""
    if wire_format not in ("openai", "anthropic"):
        raise typer.BadParameter("--format must be openai or anthropic")
    settings = ChaosSettings(
        gateway=gateway,
        requests=requests,
        concurrency=concurrency,
        model=model,
        stream=stream,
        wire_format="anthropic" if wire_format == "anthropic" else "openai",
        key=key,
        timeout_s=timeout_s,
        bypass_cache=not allow_cache,
    )
    # rich: imported by this command only, not by every `relaygate` (serve) start
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err_console = Console(stderr=True)
    with Progress(
        TextColumn("chaos"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err_console,
        transient=as_json,
    ) as progress:
        task = progress.add_task("chaos", total=requests, failed=0)
        failed = 0

        def on_done(outcome: RequestOutcome) -> None:
            nonlocal failed
            failed += not outcome.ok
            progress.update(task, advance=1, failed=failed)

        stats = asyncio.run(run_chaos(settings, on_done))
    if as_json:
        typer.echo(orjson.dumps(stats.as_json()).decode())
    else:
        Console().print(_table(stats))


def _table(stats: ChaosStats) -> Table:
    data = stats.as_json()
    from rich.table import Table

    table = Table(title="relaygate chaos", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", str(data["requests"]))
    table.add_row("success rate", f"{stats.success_rate:.2%} ({stats.succeeded})")
    table.add_row("failure rate", f"{stats.failure_rate:.2%} ({stats.failed})")
    table.add_row("degraded / fallback rate", f"{stats.degraded_rate:.2%} ({stats.degraded})")
    mean = stats.mean_attempts
    table.add_row("mean attempts", "n/a" if mean is None else f"{mean:.2f}")
    latency = data["latency_ms"]
    table.add_row("latency p50 / p99", f"{latency['p50'] or 0:.1f} ms / {latency['p99'] or 0:.1f} ms")
    table.add_row("throughput", f"{data['requests_per_s'] or 0} req/s")
    for status, count in data["status_histogram"].items():
        table.add_row(f"status {status}", str(count))
    for reason, count in data["failure_reasons"].items():
        table.add_row(f"failure: {reason}", str(count))
    return table


if __name__ == "__main__":
    typer.run(chaos_command)
