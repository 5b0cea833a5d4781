"""Races: 200 concurrent requests against a TPM limit and against a budget, through one
in-process gateway (in-memory counters and Redis) and through two real gateway processes
sharing Redis. Admitted tokens never exceed the limit by more than one request's
reservation; spend never exceeds the budget by more than one request's maximum cost."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaygate.formats.openai import parse_request
from relaygate.limits import estimate
from tests.conftest import POSTGRES_URL, auth, gateway_client, make_config
from tests.e2e import procs
from tests.keys.dbs import database_url
from tests.limits.helpers import away_from_window_edge
from tests.limits.race import MAX_TOKENS, PRICING, PROMPT, race

TPM = 5_000
BUDGET = Decimal("2")
REQUEST = {"model": "mock", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
RESERVATION = estimate.input_tokens(parse_request(REQUEST)) + MAX_TOKENS
MAX_COST = Decimal(RESERVATION) * Decimal("0.001")


def check_tpm(r: Any, label: str) -> None:
    print(f"\n[{label}] TPM {TPM}: admitted {r.admitted}/200, tokens {r.tokens} "
          f"(limit + one reservation = {TPM + RESERVATION}), refused {r.refused} {sorted(r.refusal_types)}")
    assert not r.other, r.other
    assert r.admitted > 0 and r.refused > 0
    assert r.refusal_types == {"rate_limit_exceeded"}
    assert r.tokens <= TPM + RESERVATION
    # and the limit is used, not refused too early: at worst every admitted request was
    # still holding its whole reservation when the others were refused
    assert r.admitted >= TPM // RESERVATION


def check_budget(r: Any, label: str) -> None:
    print(f"[{label}] budget ${BUDGET}: admitted {r.admitted}/200, spent ${r.cost} "
          f"(budget + one max cost = ${BUDGET + MAX_COST}), refused {r.refused} {sorted(r.refusal_types)}")
    assert not r.other, r.other
    assert r.admitted > 0 and r.refused > 0
    assert r.refusal_types == {"budget_exceeded"}
    assert r.cost <= BUDGET + MAX_COST
    assert r.admitted >= int(BUDGET / MAX_COST)


async def create_key(url: str, **fields: Any) -> str:
    async with httpx.AsyncClient() as c:
        resp = await c.post(f"{url}/admin/keys", json={"name": "race", **fields}, headers=auth(procs.MASTER))
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_race_in_one_process(backend: str, tmp_path: Path, redis_url: str) -> None:
    state = {"redis_url": redis_url} if backend == "redis" else {}
    cfg = make_config({"state": state, "pricing": PRICING, "server": {"master_key": procs.MASTER}}, tmp_path)
    await away_from_window_edge(margin_s=15)
    async with gateway_client(cfg) as client:
        url = str(client.make_url("")).rstrip("/")
        check_tpm(await race([url], await create_key(url, tpm=TPM)), f"1 process, {backend}")
        check_budget(await race([url], await create_key(url, budget_usd=str(BUDGET), budget_period="day")),
                     f"1 process, {backend}")


async def test_race_two_processes_sharing_redis(tmp_path: Path, redis_url: str) -> None:
    async for db in database_url("postgresql", tmp_path, POSTGRES_URL):
        config = {"state": {"database_url": db, "redis_url": redis_url, "journal_dir": str(tmp_path / "journal")},
                  "pricing": PRICING, "providers": {"mock": {"type": "mock"}},
                  "routes": {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]}}}
        with procs.gateway(config, tmp_path) as a, procs.gateway(config, tmp_path) as b:
            tpm_key = await create_key(a, tpm=TPM)
            budget_key = await create_key(b, budget_usd=str(BUDGET), budget_period="day")
            await away_from_window_edge(margin_s=15)
            check_tpm(await race([a, b], tpm_key), "2 processes, Redis")
            check_budget(await race([a, b], budget_key), "2 processes, Redis")
