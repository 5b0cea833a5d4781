"""`relaygate usage` as a user runs it: a subprocess talking to a gateway on a real socket."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import MASTER, auth, gateway_client, make_config

KEY = "rg-cli-key-000000000000"


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "relaygate.cli", "usage", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={"RELAYGATE_MASTER_KEY": MASTER, "PATH": "/usr/bin:/bin",
                                                     "COLUMNS": "200"})
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_usage_command_json_csv_and_table(tmp_path: Path) -> None:
    raw: dict[str, Any] = {"keys": [{"name": "cli-key", "key": KEY, "team": "green"}],
                           "pricing": {"models": {"mock-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}}
    async with gateway_client(make_config(raw, tmp_path)) as client:
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", headers=auth(KEY), json={
                "model": "mock", "messages": [{"role": "user", "content": "spend some money"}]})
            assert resp.status == 200
        url = str(client.make_url("/")).rstrip("/")

        code, out, err = await run_cli("--by", "key", "--format", "json", "--url", url)
        assert code == 0, err
        rows = json.loads(out)
        assert isinstance(rows, list) and len(rows) == 1
        row = rows[0]
        assert list(row) == ["group", "requests", "refused", "input_tokens", "output_tokens", "cache_read_tokens",
                             "cache_write_tokens", "cost_usd", "key_id", "key_name"]
        assert (row["key_id"], row["key_name"], row["requests"], row["refused"]) == ("config:cli-key", "cli-key",
                                                                                     3, 0)
        assert row["cost_usd"] == round((row["input_tokens"] + 2 * row["output_tokens"]) / 1e6, 9) > 0

        code, out, _ = await run_cli("--by", "team", "--json", "--since", "1d", "--url", url,
                                     "--master-key", MASTER)
        assert code == 0 and json.loads(out)[0]["group"] == "green"
        assert "key_id" not in json.loads(out)[0]

        code, out, _ = await run_cli("--by", "day", "--format", "csv", "--url", url)
        parsed = list(csv.DictReader(io.StringIO(out)))
        assert code == 0 and parsed[0]["requests"] == "3" and len(parsed[0]["group"]) == 10

        code, out, _ = await run_cli("--by", "model", "--url", url)
        assert code == 0 and "mock-1" in out and "usage by model" in out and "total" in out

        code, _, err = await run_cli("--by", "colour", "--url", url)
        assert code == 2 and "--by" in err
        code, _, err = await run_cli("--since", "yesterday-ish", "--url", url)
        assert code == 1 and "since" in err
        code, _, err = await run_cli("--url", url, "--master-key", "sk-wrong-master-key")
        assert code == 1 and "401" in err
