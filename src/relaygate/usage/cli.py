"""`relaygate usage`: spend and tokens by key, team, user, model, provider or day, read
from a running gateway's `/admin/usage`."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import typer

if TYPE_CHECKING:
    from rich.console import Console

COLUMNS = ["group", "requests", "refused", "input_tokens", "output_tokens", "cache_read_tokens",
           "cache_write_tokens", "cost_usd"]
GROUPS = ("key", "team", "user", "model", "provider", "day")


def fetch_usage(url: str, master_key: str, params: dict[str, str]) -> list[dict[str, Any]]:
    import httpx  # client libraries load with the command, never in `relaygate serve`

    resp = httpx.get(url.rstrip("/") + "/admin/usage?" + urlencode(params), timeout=60,
                     headers={"authorization": f"Bearer {master_key}"})
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code >= 400:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        raise RuntimeError(f"error {resp.status_code}: {message or resp.text}")
    rows: list[dict[str, Any]] = data.get("data", [])
    return rows


def _columns(by: str) -> list[str]:
    return ["group", "key_name", *COLUMNS[1:]] if by == "key" else COLUMNS


def render_csv(rows: list[dict[str, Any]], by: str) -> str:
    out = io.StringIO()
    cols = ["group", "key_id", "key_name", *COLUMNS[1:]] if by == "key" else COLUMNS
    writer = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "cost_usd": f"{r['cost_usd']:.9f}"})
    return out.getvalue()


def render_table(rows: list[dict[str, Any]], by: str, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"usage by {by}", show_footer=True)
    cols = _columns(by)
    totals = {c: sum(r.get(c) or 0 for r in rows) for c in COLUMNS[1:]}
    for c in cols:
        numeric = c not in ("group", "key_name")
        footer = ("total" if c == "group" else "" if not numeric
                  else f"{totals[c]:.6f}" if c == "cost_usd" else f"{totals[c]:,}")
        table.add_column(by if c == "group" else c.replace("_", " "), footer=footer,
                         justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*[("-" if r.get(c) is None else f"{r[c]:.6f}" if c == "cost_usd"
                         else f"{r[c]:,}" if isinstance(r.get(c), int) else str(r[c])) for c in cols])
    console.print(table)


def usage_command(
    by: str = typer.Option("key", "--by", help="Group by key, team, user, model, provider or day."),
    since: str | None = typer.Option(None, "--since", help="From this date (2026-11-01), datetime, or age (7d)."),
    until: str | None = typer.Option(None, "--until", help="Up to (not including) this date or datetime."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
    key: str | None = typer.Option(None, "--key", help="Only this key id."),
    team: str | None = typer.Option(None, "--team", help="Only this team."),
    limit: int = typer.Option(1000, "--limit", help="At most this many groups."),
    url: str = typer.Option("http://127.0.0.1:8080", "--url", help="The gateway's base URL."),
    master_key: str | None = typer.Option(None, "--master-key", help="Master key (default: $RELAYGATE_MASTER_KEY)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (same as --format json)."),
) -> None:
    """Spend and tokens grouped by key, team, user, model, provider or day."""
    if by not in GROUPS:
        typer.echo(f"--by must be one of {', '.join(GROUPS)}", err=True)
        raise typer.Exit(2)
    if as_json:
        fmt = "json"
    if fmt not in ("table", "json", "csv"):
        typer.echo("--format must be table, json or csv", err=True)
        raise typer.Exit(2)
    master = master_key or os.environ.get("RELAYGATE_MASTER_KEY")
    if not master:
        typer.echo("no master key: pass --master-key or set RELAYGATE_MASTER_KEY", err=True)
        raise typer.Exit(2)
    params = {"by": by, "limit": str(limit)}
    for name, value in (("since", since), ("until", until), ("key", key), ("team", team)):
        if value:
            params[name] = value
    import httpx
    from rich.console import Console

    try:
        rows = fetch_usage(url, master, params)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the gateway at {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if fmt == "json":
        typer.echo(json.dumps(rows))
    elif fmt == "csv":
        typer.echo(render_csv(rows, by), nl=False)
    else:
        render_table(rows, by, Console())
