from __future__ import annotations

import math
from typing import Any

import httpx
import orjson
import pytest
from anthropic import Anthropic

MODEL = "claude-mock-1"


@pytest.fixture
def client(upstream_url: str) -> Anthropic:
    return Anthropic(base_url=upstream_url, api_key="sk-ant-test", max_retries=0)


def test_messages_json(client: Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi there"}])
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert m.content[0].type == "text" and m.content[0].text == "mock reply: hi there"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == math.ceil(len("mock reply: hi there") / 4)
    assert m.usage.input_tokens > 0
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0


def test_messages_max_tokens_stop_reason(client: Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "REPLY_WORDS 9"}])
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 3


def test_messages_stream_text(client: Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "REPLY_WORDS 30"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == " ".join(f"w{i % 10}" for i in range(30))
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 30


def test_stream_event_sequence(upstream_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hey"}]}
    r = httpx.post(upstream_url + "/v1/messages", json=body,
                   headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    events = []
    for block in r.text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        data = orjson.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append(name)
    assert events[0] == "message_start"
    assert events[1:3] == ["content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


TOOLS: list[Any] = [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}]


def test_tool_use_json(client: Anthropic) -> None:
    m = client.messages.create(
        model=MODEL, max_tokens=100, tools=TOOLS,
        messages=[{"role": "user", "content": 'go\nCALL_TOOL lookup {"q": "x", "n": 2}'}],
    )
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use"
    assert block.name == "lookup" and block.input == {"q": "x", "n": 2}


def test_tool_use_stream(client: Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=100, tools=TOOLS,
        messages=[{"role": "user", "content": 'CALL_TOOL lookup {"query": "weather in paris", "n": 2}'}],
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in types
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"query": "weather in paris", "n": 2}


def _tokens(block: dict[str, Any]) -> int:
    return math.ceil(len(orjson.dumps(block)) / 4)


def test_prompt_cache_accounting_across_two_calls(upstream_url: str) -> None:
    client = Anthropic(base_url=upstream_url, api_key="sk-ant-cache", max_retries=0)
    tool = {"name": "t", "description": "x" * 400, "input_schema": {"type": "object"}}
    system_block = {"type": "text", "text": "You are careful. " * 300}
    tools = [{**tool, "cache_control": {"type": "ephemeral"}}]
    system = [{**system_block, "cache_control": {"type": "ephemeral"}}]

    def call(question: str) -> Any:
        return client.messages.create(
            model=MODEL, max_tokens=50, tools=tools, system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": question}],
        ).usage

    prefix = _tokens(tool) + _tokens(system_block)
    first = call("first question")
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens == prefix
    assert first.input_tokens == _tokens({"type": "text", "text": "first question"})

    second = call("second question")
    assert second.cache_read_input_tokens == prefix
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == _tokens({"type": "text", "text": "second question"})

    # Changing the system prompt keeps only the tools prefix and rewrites the rest.
    system[0]["text"] = "Different. " * 300
    third = call("third")
    assert third.cache_read_input_tokens == _tokens(tool)
    assert third.cache_creation_input_tokens == _tokens({"type": "text", "text": "Different. " * 300})

    # Another api key has its own cache.
    other = Anthropic(base_url=upstream_url, api_key="sk-ant-other", max_retries=0)
    usage = other.messages.create(model=MODEL, max_tokens=50, tools=tools, system=system,  # type: ignore[arg-type]
                                  messages=[{"role": "user", "content": "third"}]).usage
    assert usage.cache_read_input_tokens == 0


def test_missing_max_tokens_is_400(upstream_url: str) -> None:
    r = httpx.post(upstream_url + "/v1/messages", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                   headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_requires_key_and_version(upstream_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    no_key = httpx.post(upstream_url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    no_version = httpx.post(upstream_url + "/v1/messages", json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400


def test_models_in_anthropic_shape(client: Anthropic) -> None:
    ids = [m.id for m in client.models.list()]
    assert "claude-sonnet-4-5" in ids


def test_extended_thinking_json_and_stream(client: Anthropic) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "why is the sky blue"}],
    }
    m = client.messages.create(**kwargs)
    assert [b.type for b in m.content] == ["thinking", "text"]
    thinking = m.content[0]
    assert thinking.type == "thinking" and thinking.thinking.startswith("mock thinking about: why")
    assert thinking.signature
    assert m.usage.output_tokens == math.ceil(len(thinking.thinking) / 4) + math.ceil(
        len("mock reply: why is the sky blue") / 4)
    with client.messages.stream(**kwargs) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in types and "signature" in types
    assert final.content[0].type == "thinking" and final.content[0].thinking == thinking.thinking
    assert final.content[0].signature == thinking.signature
    assert final.usage.output_tokens == m.usage.output_tokens
