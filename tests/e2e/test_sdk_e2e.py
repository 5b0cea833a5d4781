"""Real processes (mock upstream + gateway), the official SDKs as clients, every answer
and stream chunk checked against OpenAI's published schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from relaygate.formats.sse import SSEParser
from tests.e2e.procs import MASTER, gateway, mock_upstream
from tests.openapi_spec import validate

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather by city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
TWO_CALLS = 'CALL_TOOL get_weather {"city": "Paris"}\nCALL_TOOL get_weather {"city": "Rome"}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("e2e")
    with mock_upstream(log=tmp / "mock.log") as up:
        config: dict[str, Any] = {
            "providers": {
                "oa": {"type": "openai-compatible", "base_url": f"{up}/v1", "api_key": "sk-upstream-oa-secret"},
                "an": {"type": "anthropic", "base_url": up, "api_key": "sk-ant-upstream-secret"},
            },
            "routes": {
                "gpt": {"targets": [{"provider": "oa", "model": "gpt-x"}]},
                "claude": {"targets": [{"provider": "an", "model": "claude-x"}]},
                "claude-then-gpt": {"strategy": "fallback", "targets": [
                    {"provider": "an", "model": "fail-529"}, {"provider": "oa", "model": "gpt-x"}]},
            },
        }
        with gateway(config, tmp) as url:
            yield url


@pytest.fixture
def oai(stack: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack}/v1", api_key=MASTER, max_retries=0)


@pytest.fixture
def ant(stack: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack, api_key=MASTER, max_retries=0)


@pytest.mark.parametrize("route", ["gpt", "claude", "claude-then-gpt"])
def test_openai_sdk_chat(oai: openai.OpenAI, route: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    validate("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))
    resp = raw.parse()
    assert resp.choices[0].message.content == "mock reply: hello"
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    assert raw.headers["x-relaygate-provider"] == ("an" if route == "claude" else "oa")
    assert (raw.headers.get("x-relaygate-degraded") == "true") == (route == "claude-then-gpt")


@pytest.mark.parametrize("route", ["gpt", "claude"])
def test_openai_sdk_stream_with_parallel_tool_calls(oai: openai.OpenAI, route: str) -> None:
    stream = oai.chat.completions.create(model=route, messages=[{"role": "user", "content": TWO_CALLS}],
                                         tools=TOOLS, stream=True, stream_options={"include_usage": True})
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"name": "", "args": ""})
                slot["name"] += tc.function.name or "" if tc.function else ""
                slot["args"] += tc.function.arguments or "" if tc.function else ""
    assert finish == "tool_calls"
    assert [orjson.loads(c["args"]) for _, c in sorted(calls.items())] == [{"city": "Paris"}, {"city": "Rome"}]
    assert usage is not None and usage.prompt_tokens > 0


@pytest.mark.parametrize("route", ["gpt", "claude"])
def test_raw_stream_chunks_match_the_schema(stack: str, route: str) -> None:
    body = {"model": route, "stream": True, "messages": [{"role": "user", "content": TWO_CALLS}], "tools": TOOLS}
    with httpx.stream("POST", f"{stack}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {MASTER}"}, timeout=10) as resp:
        raw = resp.read()
    events = SSEParser().feed(raw)
    assert events[-1].data == "[DONE]"
    for ev in events[:-1]:
        validate("CreateChatCompletionStreamResponse", orjson.loads(ev.data))


@pytest.mark.parametrize("route", ["claude", "gpt"])
def test_anthropic_sdk_messages_and_stream(ant: anthropic.Anthropic, route: str) -> None:
    msg = ant.messages.create(model=route, max_tokens=200, system="be brief",
                              messages=[{"role": "user", "content": "hello"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "mock reply: hello"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    with ant.messages.stream(model=route, max_tokens=200, tools=ANTHROPIC_TOOLS,
                             messages=[{"role": "user", "content": TWO_CALLS}]) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"city": "Paris"}, {"city": "Rome"}]
    assert final.stop_reason == "tool_use"


def test_tool_results_round_trip_across_formats(ant: anthropic.Anthropic) -> None:
    first = ant.messages.create(model="gpt", max_tokens=100, tools=ANTHROPIC_TOOLS,
                                messages=[{"role": "user", "content": 'CALL_TOOL get_weather {"city": "Oslo"}'}])
    use = next(b for b in first.content if b.type == "tool_use")
    second = ant.messages.create(model="gpt", max_tokens=100, tools=ANTHROPIC_TOOLS, messages=[
        {"role": "user", "content": 'CALL_TOOL get_weather {"city": "Oslo"}'},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "snow, -3C"}]}])
    assert second.content[0].text.startswith("mock reply: snow, -3C")


def test_anthropic_sdk_error_types(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    bad = anthropic.Anthropic(base_url=str(ant.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_upstream_secrets_never_reach_the_client(stack: str, tmp_path: Path) -> None:
    resp = httpx.post(f"{stack}/v1/chat/completions", headers={"authorization": f"Bearer {MASTER}"}, timeout=10,
                      json={"model": "an/fail-401", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code >= 400
    assert "sk-ant-upstream-secret" not in resp.text and "sk-upstream-oa-secret" not in resp.text
