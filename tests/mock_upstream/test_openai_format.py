from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest
from openai import OpenAI

from relaygate.mock_upstream.embeddings import embedding_vector


@pytest.fixture
def client(upstream_url: str) -> OpenAI:
    return OpenAI(base_url=upstream_url + "/v1", api_key="sk-test", max_retries=0)


def test_chat_json(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello there"}])
    assert r.object == "chat.completion"
    assert r.model == "gpt-4o"
    assert r.choices[0].message.content == "mock reply: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == 6  # ceil(len("mock reply: hello there") / 4)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_max_tokens_gives_length(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "REPLY_WORDS 30"}]
    )
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "w0 w1 w2 w3 w4"


def test_reasoning_model_reports_reasoning_tokens(client: OpenAI) -> None:
    r = client.chat.completions.create(model="o4-mini", messages=[{"role": "user", "content": "think"}])
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    reasoning = r.usage.completion_tokens_details.reasoning_tokens
    assert reasoning is not None and reasoning > 0
    assert r.usage.completion_tokens > reasoning


def test_chat_stream_with_include_usage(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "REPLY_WORDS 40"}],
        stream=True,
        stream_options={"include_usage": True},
    ))
    assert len(chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(f"w{i % 10}" for i in range(40))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 40


def test_stream_without_include_usage_has_no_usage_chunk(upstream_url: str) -> None:
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(upstream_url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in p and p["choices"] for p in parsed)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_tool_calls_json(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o",
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": 'weather?\nCALL_TOOL get_weather {"city": "Paris"}\n'
                                                'CALL_TOOL get_weather {"city": "Rome"}'}],
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]  # type: ignore[union-attr]
    assert [json.loads(c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        {"city": "Paris"}, {"city": "Rome"}]
    assert calls[0].id != calls[1].id


def test_tool_calls_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
        messages=[{"role": "user", "content": 'CALL_TOOL get_weather {"city": "Paris", "unit": "celsius"}'}],
    )
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    args: dict[int, str] = {}
    fragments = 0
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or []:
            if call.id:
                ids[call.index] = call.id
            if call.function and call.function.name:
                names[call.index] = call.function.name
            if call.function and call.function.arguments:
                args[call.index] = args.get(call.index, "") + call.function.arguments
                fragments += 1
    assert finish == "tool_calls"
    assert names == {0: "get_weather"}
    assert ids[0]
    assert fragments > 1  # arguments arrive in pieces
    assert json.loads(args[0]) == {"city": "Paris", "unit": "celsius"}


def test_embeddings_float_list_and_dimensions(client: OpenAI) -> None:
    r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b", "a"], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(len(d.embedding) == 8 for d in r.data)
    assert r.data[0].embedding == r.data[2].embedding != r.data[1].embedding
    assert r.data[0].embedding == pytest.approx(embedding_vector("a", 8))
    assert r.usage.prompt_tokens == 3
    r16 = client.embeddings.create(model="text-embedding-3-small", input="a", dimensions=16)
    assert len(r16.data[0].embedding) == 16


def test_embeddings_base64(client: OpenAI, upstream_url: str) -> None:
    raw = httpx.post(
        upstream_url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
        headers={"Authorization": "Bearer k"},
    ).json()
    encoded = raw["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<8f", base64.b64decode(encoded)))
    floats = client.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    assert decoded == floats.data[0].embedding
    # The SDK asks for base64 by default and decodes it itself.
    sdk_default = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert sdk_default.data[0].embedding == pytest.approx(decoded)


def test_automatic_prompt_caching_reports_cached_tokens(upstream_url: str) -> None:
    client = OpenAI(base_url=upstream_url + "/v1", api_key="sk-cache-test", max_retries=0)
    system = {"role": "system", "content": "policy " * 1000}
    first = client.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "a"}])
    second = client.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "b"}])
    assert first.usage and first.usage.prompt_tokens_details
    assert second.usage and second.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and 1024 <= cached < second.usage.prompt_tokens


def test_models_list(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids


def test_missing_key_is_401(upstream_url: str) -> None:
    r = httpx.post(upstream_url + "/v1/chat/completions",
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_bad_body_is_400(upstream_url: str) -> None:
    r = httpx.post(upstream_url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                   headers={"Authorization": "Bearer k"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
