"""`relaygate keys ...` against a gateway on a real socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from relaygate.keys.cli import app
from tests.conftest import MASTER, auth, gateway_client, make_config


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"RELAYGATE_MASTER_KEY": MASTER})
    return result.exit_code, result.stdout


async def test_keys_cli(tmp_path: Path) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        url = str(client.make_url("")).rstrip("/")
        await client.post("/admin/teams", json={"name": "t1"}, headers=auth())
        code, out = await asyncio.to_thread(run, "create", "--name", "cli", "--team", "t1", "--models", "mock",
                                            "--rpm", "10", "--tpm", "1000", "--budget-usd", "2.5",
                                            "--budget-period", "day", "--url", url, "--json")
        assert code == 0, out
        created = json.loads(out)
        assert created["key"].startswith("rg-") and created["rpm"] == 10 and created["budget_usd"] == "2.5"
        assert created["models"] == ["mock"] and created["team"] == "t1"
        code, out = await asyncio.to_thread(run, "create", "--name", "plain", "--url", url)
        assert code == 0 and out.strip().startswith("rg-") and len(out.strip().splitlines()) == 1
        code, out = await asyncio.to_thread(run, "list", "--url", url, "--json")
        assert code == 0 and {k["name"] for k in json.loads(out)} == {"cli", "plain"}
        assert created["key"] not in out
        code, out = await asyncio.to_thread(run, "show", created["id"], "--url", url)
        assert code == 0 and "cli" in out and created["key"] not in out
        code, out = await asyncio.to_thread(run, "rotate", created["id"], "--url", url, "--json")
        assert code == 0 and json.loads(out)["key"] != created["key"]
        code, out = await asyncio.to_thread(run, "revoke", created["id"], "--url", url)
        assert code == 0 and "revoked" in out
        code, out = await asyncio.to_thread(run, "show", "key_missing", "--url", url)
        assert code == 1
