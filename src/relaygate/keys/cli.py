"""`relaygate keys ...`: manage virtual keys on a running gateway over its admin API."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)

URL = typer.Option("http://127.0.0.1:8080", "--url", help="The gateway's base URL.")
MASTER = typer.Option(None, "--master-key", help="Master key (default: $RELAYGATE_MASTER_KEY).")
AS_JSON = typer.Option(False, "--json", help="Machine-readable output.")


def _call(method: str, url: str, master_key: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx  # only the admin client needs it, not `relaygate serve`

    key = master_key or os.environ.get("RELAYGATE_MASTER_KEY")
    if not key:
        typer.echo("no master key: pass --master-key or set RELAYGATE_MASTER_KEY", err=True)
        raise typer.Exit(2)
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=body, timeout=30,
                             headers={"authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the gateway at {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        data = resp.json()
    except ValueError:
        data = {"error": {"message": resp.text}}
    if resp.status_code >= 400:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        typer.echo(f"error {resp.status_code}: {message or resp.text}", err=True)
        raise typer.Exit(1)
    return data


def _show(data: dict[str, Any]) -> None:
    for field, value in data.items():
        if field == "key":
            continue
        if value is not None and value != {} and value != []:
            typer.echo(f"{field:22} {json.dumps(value) if isinstance(value, (dict, list)) else value}")


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="A name for the key."),
    team: str | None = typer.Option(None, "--team", help="Team id (the key is in the team's org)."),
    user: str | None = typer.Option(None, "--user", help="User the key belongs to (attribution, user limits)."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated route names the key may use."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute."),
    budget_usd: str | None = typer.Option(None, "--budget-usd", help="USD budget per period."),
    budget_period: str = typer.Option("month", "--budget-period", help="day, week or month."),
    route: str | None = typer.Option(None, "--route", help="A configured route this key always uses."),
    config_json: str | None = typer.Option(None, "--config-json", help="The key's own route config (JSON)."),
    url: str = URL, master_key: str | None = MASTER, as_json: bool = AS_JSON,
) -> None:
    """Create a key; its token is printed once."""
    if route and config_json:
        typer.echo("--route and --config-json exclude each other", err=True)
        raise typer.Exit(2)
    if budget_period not in ("day", "week", "month"):
        typer.echo("--budget-period must be day, week or month", err=True)
        raise typer.Exit(2)
    body: dict[str, Any] = {"name": name}
    for field, value in (("team", team), ("user", user), ("rpm", rpm), ("tpm", tpm), ("route", route)):
        if value is not None:
            body[field] = value
    if models:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if budget_usd is not None:
        body["budget_usd"] = str(Decimal(budget_usd))
        body["budget_period"] = budget_period
    if config_json:
        try:
            body["config"] = json.loads(config_json)
        except json.JSONDecodeError as exc:
            typer.echo(f"--config-json is not valid JSON: {exc}", err=True)
            raise typer.Exit(2) from None
    data = _call("POST", url, master_key, "/admin/keys", body)
    if as_json:
        typer.echo(json.dumps(data))
        return
    typer.echo(data["key"])
    typer.echo(f"created key {data['id']} ({data['name']}); the key above is shown only once", err=True)


@app.command("list")
def list_(url: str = URL, master_key: str | None = MASTER, as_json: bool = AS_JSON) -> None:
    """List keys (never their tokens)."""
    rows = _call("GET", url, master_key, "/admin/keys")["data"]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(f"{'ID':22} {'NAME':20} {'PREFIX':12} {'TEAM':14} {'STATE':8}")
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        typer.echo(f"{r['id']:22} {r['name'][:20]:20} {r['key_prefix']:12} {(r['team'] or '-')[:14]:14} {state:8}")


@app.command("show")
def show(key_id: str = typer.Argument(..., metavar="ID"), url: str = URL, master_key: str | None = MASTER,
         as_json: bool = AS_JSON) -> None:
    """Show one key."""
    data = _call("GET", url, master_key, f"/admin/keys/{key_id}")
    if as_json:
        typer.echo(json.dumps(data))
    else:
        _show(data)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., metavar="ID"), url: str = URL, master_key: str | None = MASTER,
           as_json: bool = AS_JSON) -> None:
    """Revoke a key at once (every replica drops it from its cache)."""
    data = _call("DELETE", url, master_key, f"/admin/keys/{key_id}")
    if as_json:
        typer.echo(json.dumps(data))
    else:
        typer.echo(f"revoked {data['id']}")


@app.command("rotate")
def rotate(key_id: str = typer.Argument(..., metavar="ID"),
           grace_s: float | None = typer.Option(None, "--grace-s", help="Seconds the old key keeps working."),
           url: str = URL, master_key: str | None = MASTER, as_json: bool = AS_JSON) -> None:
    """Issue a new token for a key; the old one works for the grace period."""
    body = {} if grace_s is None else {"grace_s": grace_s}
    data = _call("POST", url, master_key, f"/admin/keys/{key_id}/rotate", body)
    if as_json:
        typer.echo(json.dumps(data))
        return
    typer.echo(data["key"])
    typer.echo(f"rotated {data['id']}; the previous key works for {data['previous_key_valid_for_s']:.0f} s", err=True)
