"""Limits and budgets through the whole in-process gateway, on the in-process counters
and on Redis: refusals, headers, reconciliation, streams, shadow and fail modes."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from relaygate.limits.stage import LimitsStage, sweep_once
from relaygate.limits.windows import budget_window, rate_window
from relaygate.server.gateway import GATEWAY, Gateway
from tests.conftest import REDIS_URL, auth, gateway_client, make_config
from tests.limits.helpers import away_from_window_edge, install_flat_pricing


def chat_body(text: str = "hello there", max_tokens: int = 16, **extra: Any) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def gateway(backend: str, tmp_path: Path, limits: dict[str, Any] | None = None,
                  **raw: Any) -> AsyncIterator[tuple[Any, Gateway]]:
    state: dict[str, Any] = dict(raw.pop("state", {}))
    if backend == "redis":
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(REDIS_URL)
        try:
            await r.ping()
        except Exception as exc:
            pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
        await r.flushdb()
        await r.aclose()
        state["redis_url"] = REDIS_URL
    # $1 per million tokens, in and out, for every mock model the tests use
    raw.setdefault("pricing", {"models": {m: {"input_per_mtok": 1, "output_per_mtok": 1}
                                          for m in ("mock-1", "slow-200", "slow-700", "cut-4")}})
    cfg = make_config({"state": state, "limits": limits or {}, **raw}, tmp_path)
    async with gateway_client(cfg) as client:
        gw = client.server.app[GATEWAY]
        install_flat_pricing(gw)
        yield client, gw


async def new_key(client: Any, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/admin/keys", json={"name": "k", **fields}, headers=auth())
    data = await resp.json()
    assert resp.status == 201, data
    return data  # type: ignore[no-any-return]


async def post(client: Any, key: str, body: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    resp = await client.post("/v1/chat/completions", json=body or chat_body(), headers={**auth(key), **(headers or {})})
    text = await resp.text()
    import orjson

    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = text
    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, data


def stage(gw: Gateway) -> LimitsStage:
    s: LimitsStage = gw.services["limits"]
    return s


async def counter(gw: Gateway, kind: str, scope: str) -> int:
    tag = rate_window(kind, time.time()).tag
    return (await stage(gw).counters.get([f"{kind}:{scope}:{tag}"]))[0]


async def test_rpm_refusal_and_headers(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    async with gateway(backend, tmp_path) as (client, gw):
        k = await new_key(client, rpm=3, tpm=100_000)
        remaining = []
        for _ in range(3):
            status, h, _ = await post(client, k["key"])
            assert status == 200
            remaining.append(int(h["x-ratelimit-remaining-requests"]))
            assert h["x-ratelimit-limit-requests"] == "3" and h["x-ratelimit-limit-tokens"] == "100000"
            assert h["x-ratelimit-reset-requests"].endswith("s")
        assert remaining == [2, 1, 0]
        status, h, body = await post(client, k["key"])
        assert status == 429 and body["error"]["type"] == "rate_limit_exceeded"
        assert f"key '{k['id']}'" in body["error"]["message"] and "requests per minute" in body["error"]["message"]
        assert 1 <= int(h["retry-after"]) <= 60 and h["x-ratelimit-remaining-requests"] == "0"


async def test_tokens_reserved_then_reconciled(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    async with gateway(backend, tmp_path) as (client, gw):
        k = await new_key(client, tpm=10_000)
        status, _, body = await post(client, k["key"], chat_body(max_tokens=500))
        assert status == 200
        used = body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        assert await counter(gw, "tpm", f"key:{k['id']}") == used  # reservation of ~510 refunded down to usage
        ratio = stage(gw).metrics.estimate_ratio.collect()[0].samples
        assert [s.value for s in ratio if s.name.endswith("_count")] == [1.0]  # the estimate's error is tracked
        # a request that cannot fit its reservation (estimate + max_tokens) is refused
        status, _, body = await post(client, k["key"], chat_body(max_tokens=9_995))
        assert status == 429 and "tokens per minute" in body["error"]["message"]
        status, h, body = await post(client, k["key"], chat_body(max_tokens=20_000))
        assert status == 429 and "lower max_tokens" in body["error"]["message"] and "retry-after" not in h
        assert await counter(gw, "tpm", f"key:{k['id']}") == used


async def test_every_level_must_fit(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    async with gateway(backend, tmp_path) as (client, gw):
        await client.post("/admin/orgs", json={"name": "o", "tpm": 100_000}, headers=auth())
        await client.post("/admin/teams", json={"name": "t", "org": "o", "tpm": 300}, headers=auth())
        a = await new_key(client, team="t", tpm=100_000)
        b = await new_key(client, team="t", tpm=100_000)
        assert (await post(client, a["key"], chat_body(max_tokens=200)))[0] == 200
        status, _, body = await post(client, b["key"], chat_body(max_tokens=295))
        assert status == 429 and "team 't'" in body["error"]["message"]
        # the refused request reserved nothing at any level
        assert await counter(gw, "tpm", f"key:{b['id']}") == 0
        assert await counter(gw, "tpm", "org:o") == await counter(gw, "tpm", "team:t")


async def test_user_tokens_per_hour(backend: str, tmp_path: Path) -> None:
    limits = {"defaults": {"user": {"tokens_per_hour": 100}}}
    async with gateway(backend, tmp_path, limits) as (client, gw):
        k = await new_key(client, user="ann")
        assert (await post(client, k["key"], chat_body(max_tokens=60)))[0] == 200
        status, _, body = await post(client, k["key"], chat_body(max_tokens=90))
        assert status == 429 and "user '" in body["error"]["message"] and "ann" in body["error"]["message"]
        # another user of the same key has their own counter
        status, _, _ = await post(client, k["key"], chat_body(max_tokens=60),
                                  {"x-relaygate-metadata": '{"user": "bob"}'})
        assert status == 200


async def test_budget_checked_with_max_cost_and_settled(backend: str, tmp_path: Path) -> None:
    async with gateway(backend, tmp_path) as (client, gw):
        # $1/Mtok: a request with max_tokens 1000 may cost ~$0.001
        k = await new_key(client, budget_usd="0.0015", budget_period="day")
        status, _, body = await post(client, k["key"], chat_body(max_tokens=1000))
        assert status == 200
        used = body["usage"]["total_tokens"]
        w = budget_window("day", time.time())
        spent = (await stage(gw).counters.get([f"spend:key:{k['id']}:day:{w.tag}"]))[0]
        assert spent == used * 1000  # nano-dollars: settled to the actual cost
        status, h, body = await post(client, k["key"], chat_body(max_tokens=1500))
        assert status == 429 and body["error"]["type"] == "budget_exceeded"
        assert f"key '{k['id']}'" in body["error"]["message"] and "per day" in body["error"]["message"]
        assert int(h["retry-after"]) > 0
        assert (await post(client, k["key"], chat_body(max_tokens=100)))[0] == 200


async def test_stream_reconciles_at_end_and_cut_stream_charges_what_was_sent(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    routes = {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
              "cut": {"targets": [{"provider": "mock", "model": "cut-4"}]}}
    async with gateway(backend, tmp_path, routes=routes) as (client, gw):
        k = await new_key(client, tpm=100_000)
        body = chat_body("REPLY_WORDS 40", max_tokens=1000, stream=True, stream_options={"include_usage": True})
        status, _, text = await post(client, k["key"], body)
        assert status == 200 and "[DONE]" in text
        assert await counter(gw, "tpm", f"key:{k['id']}") == math.ceil(len("REPLY_WORDS 40") / 4) + 40
        before = await counter(gw, "tpm", f"key:{k['id']}")
        status, _, text = await post(client, k["key"], {**body, "model": "cut"})
        assert status == 200 and '"error"' in text
        charged = await counter(gw, "tpm", f"key:{k['id']}") - before
        assert 0 < charged < 1000  # prompt estimate + the words that were sent, not the reservation


async def test_shadow_mode_admits_and_counts(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    async with gateway(backend, tmp_path, {"shadow": ["key.rpm"]}) as (client, gw):
        k = await new_key(client, rpm=1)
        for _ in range(3):
            assert (await post(client, k["key"]))[0] == 200
        shadow = stage(gw).metrics.shadow.labels("key", "rpm")._value.get()
        assert shadow == 2


async def test_unreached_redis_fail_modes(tmp_path: Path) -> None:
    # (the breakers, also on Redis, are not under test here)
    cfg = make_config({"state": {"redis_url": "redis://127.0.0.1:1/0"}, "circuit_breaker": {"enabled": False}},
                      tmp_path)
    async with gateway_client(cfg) as client:
        rate_only = await new_key(client, rpm=5, tpm=1000)
        status, _, body = await post(client, rate_only["key"])
        assert status == 200, body  # rate limits fail open by default
        status, _, body = await post(client, rate_only["key"], headers={"idempotency-key": "i1"})
        assert status == 200, body  # so does idempotency
        budgeted = await new_key(client, rpm=5, budget_usd="1")
        status, _, body = await post(client, budgeted["key"])
        assert status == 503 and "budgets fail closed" in body["error"]["message"]
    cfg = make_config({"state": {"redis_url": "redis://127.0.0.1:1/0"}, "circuit_breaker": {"enabled": False},
                       "limits": {"rate_limit_fail_mode": "closed"}}, tmp_path / "b")
    async with gateway_client(cfg) as client:
        rate_only = await new_key(client, rpm=5)
        status, _, body = await post(client, rate_only["key"])
        assert status == 503 and "rate limits fail closed" in body["error"]["message"]


async def test_unreconciled_reservation_expires_and_is_reported(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    routes = {"mock": {"targets": [{"provider": "mock", "model": "slow-700"}]}}
    async with gateway(backend, tmp_path, {"reservation_ttl_s": 0.2}, routes=routes) as (client, gw):
        k = await new_key(client, tpm=100_000)
        task = asyncio.create_task(post(client, k["key"], chat_body(max_tokens=5000)))
        await asyncio.sleep(0.4)
        assert await counter(gw, "tpm", f"key:{k['id']}") > 5000
        # (the background sweeper may get there first: either way it is refunded once)
        assert await sweep_once(stage(gw).counters, stage(gw).metrics) in (0, 1)
        assert await counter(gw, "tpm", f"key:{k['id']}") == 0
        assert stage(gw).metrics.expired._value.get() == 1
        status, _, body = await task
        assert status == 200
        # settled after the refund: charged the actual usage, once
        assert await counter(gw, "tpm", f"key:{k['id']}") == body["usage"]["total_tokens"]


async def test_idempotency_replays_and_charges_once(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    routes = {"mock": {"targets": [{"provider": "mock", "model": "slow-200"}]}}
    async with gateway(backend, tmp_path, routes=routes) as (client, gw):
        k = await new_key(client, tpm=100_000)
        hdr = {"idempotency-key": "order-42"}
        results = await asyncio.gather(*(post(client, k["key"], headers=hdr) for _ in range(5)))
        assert all(r[0] == 200 for r in results)
        assert len({r[2]["id"] for r in results}) == 1  # one answer, replayed
        assert sum(r[1].get("x-relaygate-idempotent-replay") == "true" for r in results) == 4
        assert await counter(gw, "tpm", f"key:{k['id']}") == results[0][2]["usage"]["total_tokens"]
        status, _, body = await post(client, k["key"], chat_body("other"), headers=hdr)
        assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
        # another key's same Idempotency-Key is its own
        other = await new_key(client)
        status, h, _ = await post(client, other["key"], headers=hdr)
        assert status == 200 and "x-relaygate-idempotent-replay" not in h
        # a replayed stream
        sbody = chat_body(stream=True)
        status, _, first = await post(client, k["key"], sbody, {"idempotency-key": "s1"})
        status2, h2, again = await post(client, k["key"], sbody, {"idempotency-key": "s1"})
        assert status == status2 == 200 and h2["x-relaygate-idempotent-replay"] == "true"
        assert "mock reply: hello there" in again and "[DONE]" in again


async def test_org_budget_covers_all_its_keys(backend: str, tmp_path: Path) -> None:
    async with gateway(backend, tmp_path) as (client, gw):
        await client.post("/admin/orgs", json={"name": "acme", "budget_usd": "0.0003", "budget_period": "month"},
                          headers=auth())
        a = await new_key(client, org="acme")
        b = await new_key(client, org="acme")
        assert (await post(client, a["key"], chat_body(max_tokens=200)))[0] == 200
        status, _, body = await post(client, b["key"], chat_body(max_tokens=290))
        assert status == 429 and body["error"]["type"] == "budget_exceeded"
        assert "org 'acme'" in body["error"]["message"] and "per month" in body["error"]["message"]


async def test_config_file_keys_get_the_default_limits(backend: str, tmp_path: Path) -> None:
    await away_from_window_edge()
    limits = {"defaults": {"key": {"rpm": 2}, "team": {"rpm": 3}}}
    keys = [{"name": "a", "key": "sk-config-a", "team": "core"}, {"name": "b", "key": "sk-config-b", "team": "core"}]
    async with gateway(backend, tmp_path, limits, keys=keys) as (client, gw):
        assert [(await post(client, "sk-config-a"))[0] for _ in range(3)] == [200, 200, 429]
        status, _, body = await post(client, "sk-config-b")
        assert status == 200
        status, _, body = await post(client, "sk-config-b")
        assert status == 429 and "team 'core'" in body["error"]["message"]
        # the master key is not limited
        assert (await post(client, "sk-test-master"))[0] == 200


async def test_memory_budget_spend_survives_restart(tmp_path: Path, db_url: str) -> None:
    state = {"database_url": db_url}
    async with gateway("memory", tmp_path, state=state) as (client, gw):
        k = await new_key(client, budget_usd="0.0003", budget_period="month")
        status, _, body = await post(client, k["key"], chat_body(max_tokens=200))
        assert status == 200
    async with gateway("memory", tmp_path, state=state) as (client, gw):  # same database, fresh process state
        status, _, body = await post(client, k["key"], chat_body(max_tokens=290))
        assert status == 429 and body["error"]["type"] == "budget_exceeded", body
        assert (await post(client, k["key"], chat_body(max_tokens=50)))[0] == 200
