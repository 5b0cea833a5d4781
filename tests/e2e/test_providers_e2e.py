"""Provider breadth end to end: `relaygate mock-upstream` and `relaygate serve` as real
processes, the official `openai` and `anthropic` SDKs as clients.

- the seed's 4-level chain (Anthropic X -> Bedrock X -> Anthropic Y -> Bedrock Y) where
  the early levels fail (mock model names `fail-<code>`, `hang`, `cut-<k>`), streaming and not;
- one cross-provider request per provider with each SDK (OpenAI, Anthropic, Bedrock
  Converse, Bedrock InvokeModel, Gemini, Vertex, Azure OpenAI), streaming and not;
- embeddings through the OpenAI SDK (which asks for base64)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.procs import MASTER, gateway, mock_upstream

AWS = {"region": "us-east-1", "aws_access_key_id": "AKIAE2EPROVIDERS0001", "aws_secret_access_key": "e2e-aws-secret-key"}
CLAUDE_X, CLAUDE_Y = "claude-sonnet-4-5", "claude-3-7-sonnet-latest"
BEDROCK_X, BEDROCK_Y = "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather by city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
TWO_CALLS = 'CALL_TOOL get_weather {"city": "Paris"}\nCALL_TOOL get_weather {"city": "Rome"}'


def chain(levels: list[tuple[str, str]]) -> dict[str, Any]:
    return {"strategy": {"mode": "fallback", "on_status_codes": [429, 500, 502, 503, 504, 529]},
            "targets": [{"provider": p, "model": m} for p, m in levels]}


# name -> (levels, index of the level expected to serve, served provider)
CHAINS: dict[str, tuple[list[tuple[str, str]], int]] = {
    "chain-level1": ([("an", CLAUDE_X), ("br", BEDROCK_X), ("an", CLAUDE_Y), ("br", BEDROCK_Y)], 0),
    "chain-level2": ([("an", "fail-503"), ("br", BEDROCK_X), ("an", CLAUDE_Y), ("br", BEDROCK_Y)], 1),
    "chain-level3": ([("an", "fail-429"), ("br", "fail-503"), ("an", CLAUDE_Y), ("br", BEDROCK_Y)], 2),
    "chain-level4": ([("an", "fail-529"), ("br", "fail-429"), ("an", "hang"), ("br", "invoke/" + BEDROCK_Y)], 3),
    "chain-cut": ([("an", "fail-500"), ("br", "cut-0"), ("an", "cut-0"), ("br", BEDROCK_Y)], 3),
}
PROVIDER_ROUTES = {
    "p-openai": ("oa", "gpt-4o"),
    "p-anthropic": ("an", CLAUDE_X),
    "p-bedrock-converse": ("br", BEDROCK_X),
    "p-bedrock-invoke": ("br", "invoke/" + BEDROCK_X),
    "p-gemini": ("gm", "gemini-2.5-flash"),
    "p-vertex": ("vx", "gemini-2.5-pro"),
    "p-azure": ("az", "gpt-4o-deployment"),
}


@pytest.fixture(scope="module")
def upstream_and_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("providers-e2e")
    with mock_upstream(log=tmp / "mock.log") as up:
        routes: dict[str, Any] = {name: chain(levels) for name, (levels, _) in CHAINS.items()}
        routes.update({name: {"targets": [{"provider": p, "model": m}]} for name, (p, m) in PROVIDER_ROUTES.items()})
        routes["e-titan"] = {"targets": [{"provider": "br", "model": "amazon.titan-embed-text-v2:0"}]}
        routes["e-gemini"] = {"strategy": "fallback", "targets": [{"provider": "gm", "model": "fail-503"},
                                                                  {"provider": "gm", "model": "text-embedding-004"}]}
        config: dict[str, Any] = {
            "providers": {
                "an": {"type": "anthropic", "base_url": up, "api_key": "sk-ant-e2e-upstream-0001"},
                "br": {"type": "bedrock", "base_url": up, **AWS},
                "oa": {"type": "openai-compatible", "base_url": f"{up}/v1", "api_key": "sk-e2e-upstream-oa-0001"},
                "gm": {"type": "gemini", "base_url": up, "api_key": "AIzaE2EGeminiKey0000000000001"},
                "vx": {"type": "vertex", "base_url": up, "api_key": "ya29.e2e-vertex-token",
                       "project": "relaygate-e2e", "location": "us-central1"},
                "az": {"type": "azure-openai", "base_url": up, "api_key": "azure-e2e-key-00000001"},
            },
            "routes": routes,
            "timeouts": {"connect_ms": 1000, "first_byte_ms": 1500, "total_ms": 20000},
            "circuit_breaker": {"failure_threshold": 1000},
        }
        with gateway(config, tmp) as url:
            yield up, url


@pytest.fixture(scope="module")
def stack(upstream_and_gateway: tuple[str, str]) -> str:
    return upstream_and_gateway[1]


@pytest.fixture
def oai(stack: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack}/v1", api_key=MASTER, max_retries=0, timeout=30)


@pytest.fixture
def ant(stack: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack, api_key=MASTER, max_retries=0, timeout=30)


def served(route: str) -> tuple[str, str]:
    levels, index = CHAINS[route]
    return levels[index]


# --- the 4-level chain -------------------------------------------------------------------


@pytest.mark.parametrize("route", list(CHAINS))
def test_chain_openai_sdk(oai: openai.OpenAI, route: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=route, messages=[{"role": "user", "content": "hello"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "mock reply: hello"
    provider, model = served(route)
    assert (raw.headers["x-relaygate-provider"], raw.headers["x-relaygate-model"]) == (provider, model)
    assert raw.headers["x-relaygate-attempts"] == str(CHAINS[route][1] + 1)
    assert (raw.headers.get("x-relaygate-degraded") == "true") == (CHAINS[route][1] > 0)
    assert resp.usage is not None and resp.usage.prompt_tokens > 0


@pytest.mark.parametrize("route", list(CHAINS))
def test_chain_anthropic_sdk_stream(ant: anthropic.Anthropic, route: str) -> None:
    with ant.messages.with_streaming_response.create(
            model=route, max_tokens=256, stream=True, messages=[{"role": "user", "content": "hello"}]) as raw:
        headers = raw.headers
        events = list(raw.parse())
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "mock reply: hello"
    assert events[-1].type == "message_stop"
    assert headers["x-relaygate-provider"] == served(route)[0]
    assert headers["x-relaygate-attempts"] == str(CHAINS[route][1] + 1)


@pytest.mark.parametrize("route", ["chain-level2", "chain-level4", "chain-cut", "p-gemini", "p-vertex", "p-azure",
                                   "p-bedrock-invoke", "p-openai"])
def test_chain_openai_sdk_stream_with_tools(oai: openai.OpenAI, route: str) -> None:
    stream = oai.chat.completions.create(model=route, messages=[{"role": "user", "content": TWO_CALLS}], tools=TOOLS,
                                         stream=True, stream_options={"include_usage": True})
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["args"] += (tc.function.arguments or "") if tc.function else ""
    assert finish == "tool_calls"
    assert [(c["name"], c["args"].replace(" ", "")) for c in calls.values()] == [
        ("get_weather", '{"city":"Paris"}'), ("get_weather", '{"city":"Rome"}')]
    assert all(c["id"] for c in calls.values())
    assert usage is not None and usage.completion_tokens > 0


def test_all_levels_failing_is_a_503_listing_attempts(oai: openai.OpenAI, stack: str) -> None:
    import httpx

    config = '{"strategy": {"mode": "fallback"}, "targets": [{"provider": "an", "model": "fail-503"}, ' \
             '{"provider": "br", "model": "fail-429"}]}'
    resp = httpx.post(f"{stack}/v1/chat/completions", headers={"authorization": f"Bearer {MASTER}",
                      "x-relaygate-config": config},
                      json={"model": "any", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert resp.status_code == 503
    attempts = resp.json()["error"]["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("an", 503), ("br", 429)]
    assert "ThrottlingException" in attempts[1]["message"]
    assert "e2e-aws-secret-key" not in resp.text


# --- one request per provider with each SDK ------------------------------------------------


@pytest.mark.parametrize("route", list(PROVIDER_ROUTES))
@pytest.mark.parametrize("stream", [False, True])
def test_each_provider_openai_sdk(oai: openai.OpenAI, route: str, stream: bool) -> None:
    messages: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    if not stream:
        raw = oai.chat.completions.with_raw_response.create(model=route, messages=messages, max_tokens=200,
                                                            temperature=0.2)
        resp = raw.parse()
        text, headers = resp.choices[0].message.content, raw.headers
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    else:
        with oai.chat.completions.with_streaming_response.create(
                model=route, messages=messages, stream=True, stream_options={"include_usage": True}) as raw:
            headers = raw.headers
            chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert text == "mock reply: hello"
    assert (headers["x-relaygate-provider"], headers["x-relaygate-model"]) == PROVIDER_ROUTES[route]


@pytest.mark.parametrize("route", list(PROVIDER_ROUTES))
@pytest.mark.parametrize("stream", [False, True])
def test_each_provider_anthropic_sdk(ant: anthropic.Anthropic, route: str, stream: bool) -> None:
    kwargs: dict[str, Any] = {"model": route, "max_tokens": 200, "system": "be brief",
                              "messages": [{"role": "user", "content": TWO_CALLS}],
                              "tools": [{"name": "get_weather", "input_schema": {
                                  "type": "object", "properties": {"city": {"type": "string"}}}}]}
    if stream:
        with ant.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = ant.messages.create(**kwargs)
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert message.stop_reason == "tool_use"
    assert len({u.id for u in uses}) == 2
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    # The tool results go back (Gemini matches them by name; the others by id).
    follow = ant.messages.create(model=route, max_tokens=200, messages=[
        {"role": "user", "content": TWO_CALLS}, {"role": "assistant", "content": message.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": f"sunny in {i}"}
                                     for i, u in enumerate(uses)]}], tools=kwargs["tools"])
    assert follow.stop_reason == "end_turn" and follow.content


def test_gemini_safety_block_is_content_filter(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="p-gemini", messages=[{"role": "user", "content": "TRIGGER_SAFETY"}])
    assert resp.choices[0].finish_reason == "content_filter"
    assert "Gemini blocked the response: SAFETY" in (resp.choices[0].message.content or "")


# --- embeddings --------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "attempts"), [("e-titan", "1"), ("e-gemini", "2")])
def test_embeddings_openai_sdk(oai: openai.OpenAI, route: str, attempts: str) -> None:
    from relaygate.mock_upstream.embeddings import embedding_vector

    raw = oai.embeddings.with_raw_response.create(model=route, input=["first text", "second text"])
    resp = raw.parse()  # the SDK asked for base64 and decoded it
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[1].embedding == pytest.approx(embedding_vector("second text"), abs=1e-6)
    assert resp.usage.prompt_tokens > 0
    assert raw.headers["x-relaygate-attempts"] == attempts


def test_zz_upstream_saw_each_wire_format(upstream_and_gateway: tuple[str, str]) -> None:
    """Runs last: the mock upstream counted each provider path the tests above used."""
    import httpx

    stats = httpx.get(upstream_and_gateway[0] + "/_mock/stats").json()
    seen = {(r["kind"], r["model"], r["outcome"]) for r in stats["requests"]}
    for kind, model in [("bedrock.converse", BEDROCK_X), ("bedrock.converse_stream", BEDROCK_X),
                        ("bedrock.invoke", BEDROCK_X), ("bedrock.invoke_stream", BEDROCK_X),
                        ("bedrock.invoke", BEDROCK_Y), ("gemini.generate", "gemini-2.5-flash"),
                        ("gemini.stream", "gemini-2.5-pro"), ("azure.chat", "gpt-4o-deployment")]:
        assert (kind, model, "ok") in seen, (kind, model)
    assert ("bedrock.converse_stream", "cut-0", "cut") in seen
    assert ("bedrock.converse", "fail-429", "fail_429") in seen
    # No request reached Bedrock unsigned (the mock answers those 403 `rejected_403`).
    assert not any(k.startswith("bedrock") and o.startswith("rejected") for k, _, o in seen)


@pytest.mark.parametrize("route", ["p-anthropic", "p-bedrock-converse", "p-bedrock-invoke"])
def test_prompt_cache_usage_is_normalised(ant: anthropic.Anthropic, route: str) -> None:
    """Bedrock reports input tokens without the cache, like Anthropic: the gateway adds the
    cache back in (its convention) and takes it out again for Anthropic-format clients."""
    system = [{"type": "text", "text": f"{route} policy. " + "Be precise and kind. " * 120,
               "cache_control": {"type": "ephemeral"}}]
    first = ant.messages.create(model=route, max_tokens=64, system=system,  # type: ignore[arg-type]
                                messages=[{"role": "user", "content": "first question"}])
    second = ant.messages.create(model=route, max_tokens=64, system=system,  # type: ignore[arg-type]
                                 messages=[{"role": "user", "content": "first question"}])
    assert (first.usage.cache_creation_input_tokens or 0) > 500 and not first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    # Were Bedrock's cache-exclusive inputTokens taken as the whole prompt, taking the cache
    # out again for this client would leave 0 here.
    assert second.usage.input_tokens == first.usage.input_tokens > 0
