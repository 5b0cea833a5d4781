"""The cost stage in a whole gateway: `x-relaygate-cost-usd` on answers, the SSE comment
on streams, cache-hit pricing and refusals priced at zero."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from relaygate.server.bootstrap import build_gateway
from tests.conftest import auth, gateway_client, make_config

# mock-1 priced by config: $1 per million in, $2 per million out
PRICED = {"pricing": {"models": {"mock-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}}


def body(text: str = "hello there, how are you?", **kw: Any) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": text}], **kw}


async def test_pricing_service_and_cost_stage_are_installed(tmp_path: Any) -> None:
    gw = await build_gateway(make_config({}, tmp_path))
    try:
        assert gw.stages[-1].name == "cost"
        assert gw.services["pricing"].max_cost("openai", "o", "gpt-4o", 1000, 1000) == Decimal("0.0125")
    finally:
        await gw.close()


async def test_cost_header_equals_usage_times_price(tmp_path: Any) -> None:
    async with gateway_client(make_config(PRICED, tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json=body(), headers=auth())
        assert resp.status == 200
        data = await resp.json()
        u = data["usage"]
        want = (Decimal(u["prompt_tokens"]) * 1 + Decimal(u["completion_tokens"]) * 2) / 1_000_000
        assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
        assert resp.headers["x-relaygate-cost-usd"] == str(want.quantize(Decimal("1e-9")))


async def test_stream_carries_cost_in_an_sse_comment_before_done(tmp_path: Any) -> None:
    async with gateway_client(make_config(PRICED, tmp_path)) as client:
        req = body(stream=True, stream_options={"include_usage": True})
        resp = await client.post("/v1/chat/completions", json=req, headers=auth())
        assert resp.status == 200
        assert "x-relaygate-cost-usd" not in resp.headers
        text = (await resp.read()).decode()
        lines = [ln for ln in text.split("\n") if ln]
        comment = [ln for ln in lines if ln.startswith(": x-relaygate-cost-usd=")]
        assert len(comment) == 1
        assert lines.index(comment[0]) < lines.index("data: [DONE]")
        import json

        usage = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")][-1]["usage"]
        want = (Decimal(usage["prompt_tokens"]) + 2 * Decimal(usage["completion_tokens"])) / 1_000_000
        assert comment[0].split("=", 1)[1] == str(want.quantize(Decimal("1e-9")))


async def test_anthropic_stream_cost_comment_before_message_stop(tmp_path: Any) -> None:
    async with gateway_client(make_config(PRICED, tmp_path)) as client:
        req = {"model": "mock", "max_tokens": 100, "stream": True,
               "messages": [{"role": "user", "content": "hello there"}]}
        resp = await client.post("/v1/messages", json=req, headers=auth())
        text = (await resp.read()).decode()
        assert text.index(": x-relaygate-cost-usd=") < text.index("message_stop")
        value = Decimal(text.split(": x-relaygate-cost-usd=")[1].split("\n")[0])
        assert value > 0


async def test_refusal_costs_nothing(tmp_path: Any) -> None:
    async with gateway_client(make_config(PRICED, tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json=body(), headers=auth("rg-wrong-key-123456"))
        assert resp.status == 401


async def test_failed_route_costs_zero(tmp_path: Any) -> None:
    cfg = make_config({**PRICED, "routes": {"bad": {"targets": [{"provider": "mock", "model": "fail-503"}]}}},
                      tmp_path)
    async with gateway_client(cfg) as client:
        resp = await client.post("/v1/chat/completions", json={**body(), "model": "bad"}, headers=auth())
        assert resp.status == 503
        assert resp.headers["x-relaygate-cost-usd"] == "0.000000000"


async def test_mock_usage_is_ceil_chars_over_four(tmp_path: Any) -> None:
    async with gateway_client(make_config(PRICED, tmp_path)) as client:
        text = "x" * 41
        resp = await client.post("/v1/chat/completions", json=body(text), headers=auth())
        data = await resp.json()
        assert data["usage"]["prompt_tokens"] == math.ceil(41 / 4)


async def _two_identical(tmp_path: Any, ratio: float) -> tuple[Any, Any]:
    raw = {**PRICED, "cache": {"hit_cost_ratio": ratio}}
    async with gateway_client(make_config(raw, tmp_path)) as client:
        req = body("cache me please", temperature=0)
        first = await client.post("/v1/chat/completions", json=req, headers=auth())
        await first.read()
        second = await client.post("/v1/chat/completions", json=req, headers=auth())
        await second.read()
        return first, second


async def test_cache_hits_are_free_by_default(tmp_path: Any) -> None:
    first, second = await _two_identical(tmp_path, 0.0)
    assert first.headers["x-relaygate-cache"] == "miss" and second.headers["x-relaygate-cache"] == "hit-exact"
    assert Decimal(first.headers["x-relaygate-cost-usd"]) > 0
    assert second.headers["x-relaygate-cost-usd"] == "0.000000000"


async def test_cache_hits_priced_at_hit_cost_ratio(tmp_path: Any) -> None:
    first, second = await _two_identical(tmp_path, 0.5)
    assert second.headers["x-relaygate-cache"] == "hit-exact"
    assert Decimal(second.headers["x-relaygate-cost-usd"]) == Decimal(first.headers["x-relaygate-cost-usd"]) / 2
