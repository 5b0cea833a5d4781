"""Anthropic prompt-cache breakpoints: where they go, and what they save against the mock
Anthropic upstream (which simulates prompt caching)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from relaygate.cache.prompt_caching import PromptCaching, canonicalize_for_caching, plan_breakpoints
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats.types import TextPart, ToolResultPart
from relaygate.mock_upstream.faults import FaultConfig
from relaygate.mock_upstream.server import MockUpstreamThread
from relaygate.routing.plan import compile_route
from tests.conftest import auth, gateway_client, make_config

BIG = "lorem ipsum dolor sit amet " * 200  # ~1350 tokens


def agent_request(turns: int = 3, tools: bool = True, system: bool = True) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": BIG}]}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{i}", "name": "search", "input": {"q": f"q{i}"}}]})
        result = orjson.dumps({"hits": [i, i + 1], "timestamp": f"2026-01-0{i + 1}T00:00:00Z",
                               "request_id": f"req-{i}"}).decode()
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": result}]})
    body: dict[str, Any] = {"model": "claude", "max_tokens": 50, "messages": messages}
    if tools:
        body["tools"] = [{"name": n, "description": "d", "input_schema": {"type": "object", "properties": {}}}
                         for n in ("search", "fetch")]
    if system:
        body["system"] = "You are a research agent."
    return body


def marked(chat: Any) -> list[str]:
    out = [f"tool:{t.name}" for t in chat.tools or [] if t.cache_control]
    out += ["system" for p in chat.system if p.cache_control]
    for m in chat.messages:
        for p in m.content:
            if isinstance(p, TextPart) and p.cache_control:
                out.append("large" if p.text == BIG else "text")
            elif isinstance(p, ToolResultPart) and p.cache_control:
                out.append(f"result:{p.tool_call_id}")
    return out


def test_four_breakpoints_in_priority_order() -> None:
    chat = anthropic_fmt.parse_request(agent_request())
    assert plan_breakpoints(chat, large_content_tokens=1024) == 4
    assert marked(chat) == ["tool:fetch", "system", "large", "result:toolu_2"]


def test_free_slots_go_to_the_most_recent_tool_results() -> None:
    chat = anthropic_fmt.parse_request(agent_request(tools=False, system=False))
    assert plan_breakpoints(chat, large_content_tokens=1024) == 4
    assert marked(chat) == ["large", "result:toolu_0", "result:toolu_1", "result:toolu_2"]
    small = anthropic_fmt.parse_request(agent_request(tools=False))
    assert plan_breakpoints(small, large_content_tokens=100_000) == 4
    assert marked(small) == ["system", "result:toolu_0", "result:toolu_1", "result:toolu_2"]
    one = anthropic_fmt.parse_request(agent_request(turns=1, tools=False))
    assert plan_breakpoints(one, large_content_tokens=100_000) == 2
    assert marked(one) == ["system", "result:toolu_0"]


def test_a_client_plan_is_left_alone() -> None:
    body = agent_request()
    body["system"] = [{"type": "text", "text": "mine", "cache_control": {"type": "ephemeral"}}]
    chat = anthropic_fmt.parse_request(body)
    assert plan_breakpoints(chat, 1024) == 0
    assert marked(chat) == ["system"]


def test_tool_results_are_canonicalised_before_caching() -> None:
    chat = anthropic_fmt.parse_request(agent_request(turns=1))
    canonicalize_for_caching(chat)
    result = chat.messages[-1].content[0]
    assert isinstance(result, ToolResultPart) and isinstance(result.content[0], TextPart)
    assert result.content[0].text == '{"hits":[0,1]}'


def test_tool_schemas_are_sorted_but_never_lose_a_property() -> None:
    body = agent_request(turns=0)
    schema = {"type": "object", "required": ["timestamp"],
              "properties": {"timestamp": {"type": "string"}, "request_id": {"type": "string"}}}
    body["tools"] = [{"name": "log", "description": "d", "input_schema": schema}]
    chat = anthropic_fmt.parse_request(body)
    canonicalize_for_caching(chat)
    assert chat.tools is not None
    assert list(chat.tools[0].parameters["properties"]) == ["request_id", "timestamp"]
    assert list(chat.tools[0].parameters) == ["properties", "required", "type"]


def test_only_anthropic_family_targets_get_breakpoints() -> None:
    cfg = make_config({"providers": {"claude-direct": {"type": "anthropic", "api_key": "k"},
                                     "aws": {"type": "bedrock", "region": "us-east-1"}}})
    pc = PromptCaching(cfg)
    from relaygate.config.models import RouteConfig

    def route(*targets: tuple[str, str]) -> RouteConfig:
        return RouteConfig.model_validate({"prompt_caching": True, "strategy": "fallback",
                                           "targets": [{"provider": p, "model": m} for p, m in targets]})

    for r, expected in [
        (route(("claude-direct", "claude-sonnet-4-5")), True),
        (route(("aws", "us.anthropic.claude-sonnet-4-5-v1:0")), True),
        (route(("aws", "amazon.nova-pro-v1:0")), False),
        (route(("mock", "mock-1")), False),
        (route(("mock", "mock-1"), ("claude-direct", "claude-sonnet-4-5")), True),
    ]:
        assert pc.wanted(r, compile_route(r)) is expected
    plain = route(("claude-direct", "claude-sonnet-4-5")).model_copy(update={"prompt_caching": False})
    assert not pc.wanted(plain, compile_route(plain))


@pytest.fixture
def upstream() -> Iterator[str]:
    with MockUpstreamThread(FaultConfig()) as up:
        yield up.url


@pytest.mark.parametrize("inbound", ["anthropic", "openai"])
async def test_breakpoints_turn_repeated_prefixes_into_cache_reads(upstream: str, inbound: str, tmp_path: Any) -> None:
    raw = {"providers": {"claude-direct": {"type": "anthropic", "api_key": "k", "base_url": upstream}},
           "routes": {"claude": {"prompt_caching": True, "targets": [{"provider": "claude-direct",
                                                                      "model": "claude-sonnet-4-5"}]},
                      "claude-plain": {"targets": [{"provider": "claude-direct", "model": "claude-sonnet-4-5"}]}}}
    async with gateway_client(make_config(raw, tmp_path)) as client:
        async def usage(model: str, turns: int) -> dict[str, Any]:
            body = {**agent_request(turns), "model": model}
            if inbound == "anthropic":
                r = await client.post("/v1/messages", json=body, headers=auth())
                assert r.status == 200, await r.text()
                u = (await r.json())["usage"]
                return {"read": u.get("cache_read_input_tokens", 0), "write": u.get("cache_creation_input_tokens", 0)}
            chat = anthropic_fmt.parse_request(body)
            from relaygate.formats import openai as openai_fmt

            oai = openai_fmt.dump_request(chat, model)
            r = await client.post("/v1/chat/completions", json=oai, headers=auth())
            assert r.status == 200, await r.text()
            u = (await r.json())["usage"]
            return {"read": (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0), "write": None}

        first = await usage("claude", 2)
        second = await usage("claude", 3)  # the next turn: same prefix plus one tool round
        assert second["read"] > 1000, (first, second)
        if inbound == "anthropic":
            assert first["write"] > 1000
        plain = [await usage("claude-plain", 2), await usage("claude-plain", 3)]
        assert all(u["read"] == 0 for u in plain)


async def test_provider_specific_parameters_survive_the_breakpoints(upstream: str, tmp_path: Any) -> None:
    raw = {"providers": {"claude-direct": {"type": "anthropic", "api_key": "k", "base_url": upstream}},
           "routes": {"claude": {"prompt_caching": True, "targets": [{"provider": "claude-direct",
                                                                      "model": "claude-sonnet-4-5"}]}}}
    async with gateway_client(make_config(raw, tmp_path)) as client:
        body = {**agent_request(1), "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024}}
        r = await client.post("/v1/messages", json=body, headers=auth())
        assert r.status == 200, await r.text()
        answer = await r.json()
        assert [b["type"] for b in answer["content"]][0] == "thinking"  # `thinking` reached the upstream
        assert answer["usage"]["cache_creation_input_tokens"] > 1000  # and so did the breakpoints
