"""The fidelity matrix: each inbound format (OpenAI chat, Anthropic messages) x each
provider x each feature, on recorded wire bytes (tests/providers/recorded/<provider>/,
written from each provider's API reference). Every cell asserts what is sent upstream and
what the client finally sees, and records its outcome (`ok`, `400` where the provider
cannot do it and the client gets a clear 400, `n/a` where the inbound format has no such
feature) into build/provider_matrix.json for scripts/provider_matrix.py."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from relaygate.errors import GatewayError, UpstreamError
from relaygate.formats.types import ChatResponse, Message, StreamEnd, TextPart, ToolCallStart, ToolResultPart
from relaygate.providers.base import ChatCall, ProviderAdapter
from tests.providers.fidelity import (
    FAMILY,
    INBOUND,
    PNG,
    PROVIDERS,
    SECRETS,
    adapter,
    client_stream,
    client_view,
    decode_stream,
    inbound_body,
    parse_inbound,
    recorded,
    recorded_http,
    upstream_for,
    view,
)

FEATURES = ("text", "system", "multi_turn", "images", "image_url", "tools", "json_schema", "stop_sequences",
            "max_tokens", "sampling", "stream_tools", "usage_cache", "usage_reasoning", "stop_reasons", "errors",
            "broken_streams")
ROOT = Path(__file__).resolve().parents[2]
RESULTS_FILE = Path(os.environ.get("RELAYGATE_MATRIX_OUT", ROOT / "build" / "provider_matrix.json"))
RESULTS: dict[str, dict[str, dict[str, str]]] = {}
FINISH = {
    "openai": {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
               "content_filter": "content_filter", "refusal": "content_filter"},
    "anthropic": {"end_turn": "end_turn", "stop_sequence": "stop_sequence", "max_tokens": "max_tokens",
                  "tool_use": "tool_use", "content_filter": "refusal", "refusal": "refusal"},
}
STREAM_FILE = {"bedrock-converse": "stream_{}.bin", "bedrock-invoke": "stream_{}.bin"}


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if RESULTS_FILE.exists():
        try:
            previous = json.loads(RESULTS_FILE.read_text()).get("cells", {})
        except ValueError:
            previous = {}
    for fmt, rows in RESULTS.items():
        for provider, cells in rows.items():
            previous.setdefault(fmt, {}).setdefault(provider, {}).update(cells)
    RESULTS_FILE.write_text(json.dumps({"features": FEATURES, "providers": PROVIDERS, "inbound": INBOUND,
                                        "cells": previous}, indent=1))


@contextmanager
def cell(fmt: str, provider: str, feature: str) -> Iterator[dict[str, str]]:
    outcome = {"value": "ok"}
    slot = RESULTS.setdefault(fmt, {}).setdefault(provider, {})
    try:
        yield outcome
    except BaseException:
        slot[feature] = "FAIL"
        raise
    slot[feature] = outcome["value"]


def answer(provider: str, fmt: str, a: ProviderAdapter, name: str) -> tuple[ChatResponse, bytes | None]:
    body = recorded(provider, name)
    return a.parse_chat(body), (body if a.native_format == fmt else None)


def stream_name(provider: str, kind: str) -> str:
    return STREAM_FILE.get(provider, "stream_{}.sse").format(kind)


# --- one test per feature, parametrized over inbound format x provider --------------------

matrix = pytest.mark.parametrize("provider", PROVIDERS)
inbound = pytest.mark.parametrize("fmt", INBOUND)


@inbound
@matrix
def test_text(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "text"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("text", fmt))
        v = view(provider, up, sent)
        assert v.roles == ["user"] and v.texts == ["Hello"] and not v.stream
        expected_url = {
            "openai": "https://api.openai.com/v1/chat/completions",
            "anthropic": "https://api.anthropic.com/v1/messages",
            "bedrock-converse": "https://bedrock-runtime.us-west-2.amazonaws.com/model/"
                                "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
            "bedrock-invoke": "https://bedrock-runtime.us-west-2.amazonaws.com/model/"
                              "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
            "gemini": "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
            "azure-openai": "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions"
                            "?api-version=2024-10-21",
        }[provider]
        assert up.url == expected_url
        headers = {k.lower(): v for k, v in (up.sign(up) if up.sign else up).headers.items()}
        auth = {
            "openai": ("authorization", "Bearer " + SECRETS["openai"]),
            "anthropic": ("x-api-key", SECRETS["anthropic"]),
            "gemini": ("x-goog-api-key", SECRETS["gemini"]),
            "azure-openai": ("api-key", SECRETS["azure"]),
        }.get(provider)
        if auth is None:  # Bedrock: SigV4 by the transport's sign hook
            assert headers["authorization"].startswith(
                f"AWS4-HMAC-SHA256 Credential={SECRETS['aws_id']}/") and "/us-west-2/bedrock/aws4_request" in headers[
                "authorization"]
            assert "x-amz-date" in headers
            assert str((up.sign(up)).url).endswith("v1%3A0/" + up.url.rsplit("/", 1)[1])
        else:
            assert headers[auth[0]] == auth[1]
        if provider == "azure-openai":
            assert "authorization" not in headers
        if provider == "bedrock-invoke":
            assert sent["anthropic_version"] == "bedrock-2023-05-31" and "model" not in sent
        resp, native = answer(provider, fmt, a, "text.json")
        seen = client_view(fmt, resp, native)
        assert seen.text == "Hello! How can I help you today?"
        assert seen.finish == FINISH[fmt]["end_turn"]
        assert (seen.input_tokens, seen.output_tokens) == (19, 10)


@inbound
@matrix
def test_system(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "system"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("system", fmt))
        v = view(provider, up, sent)
        assert v.system == "You are terse."
        assert v.roles == ["user"] and "You are terse." not in v.texts
        resp, native = answer(provider, fmt, a, "text.json")
        assert client_view(fmt, resp, native).text == "Hello! How can I help you today?"


@inbound
@matrix
def test_multi_turn(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "multi_turn"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("multi_turn", fmt))
        v = view(provider, up, sent)
        assert v.roles == ["user", "assistant", "user"]
        assert v.texts == ["My name is Ada.", "Nice to meet you, Ada.", "What is my name?"]
        resp, native = answer(provider, fmt, a, "text.json")
        assert client_view(fmt, resp, native).finish == FINISH[fmt]["end_turn"]


@inbound
@matrix
def test_images(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "images"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("images", fmt))
        v = view(provider, up, sent)
        assert v.images == [("image/png", PNG)]
        assert v.texts == ["What is in this image?"]


@inbound
@matrix
def test_image_url(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "image_url") as out:
        body = inbound_body("image_url", fmt)
        if FAMILY[provider] in ("converse", "gemini") or provider == "bedrock-invoke":
            with pytest.raises(GatewayError) as info:
                upstream_for(provider, fmt, body)
            assert info.value.status == 400
            assert "URL" in info.value.message and "base64" in info.value.message
            out["value"] = "400"
            return
        _, up, sent = upstream_for(provider, fmt, body)
        v = view(provider, up, sent)
        assert v.images == [("url", "https://upload.wikimedia.org/wikipedia/commons/a/a7/"
                                    "Camponotus_flavomarginatus_ant.jpg")]


@inbound
@matrix
def test_tools(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "tools"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("tools", fmt))
        v = view(provider, up, sent)
        assert v.tool_names == ["get_weather", "get_time"]
        assert [name for _, name in v.tool_calls] == ["get_weather", "get_time"]
        assert v.roles == ["user", "assistant", "user"]
        assert v.texts[-1] == "And tomorrow?"
        if provider == "gemini":
            # No ids on Gemini: results go back by function name, JSON objects as objects.
            assert v.tool_results == [("get_weather", '{"temp_c":18}'), ("get_time", '{"content":"14:05"}')]
            decl = sent["tools"][0]["functionDeclarations"][0]
            assert "additionalProperties" not in decl["parameters"]
            assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
        else:
            assert [(i, t.replace(" ", "")) for i, t in v.tool_results] == [("call_w1", '{"temp_c":18}'),
                                                                              ("call_t1", "14:05")]
            assert [i for i, _ in v.tool_calls] == ["call_w1", "call_t1"]
        resp, native = answer(provider, fmt, a, "tools.json")
        seen = client_view(fmt, resp, native)
        assert [(n, args) for _, n, args in seen.tool_calls] == [
            ("get_weather", {"location": "Paris, France"}), ("get_time", {"timezone": "Europe/Paris"})]
        ids = [i for i, _, _ in seen.tool_calls]
        assert all(ids) and len(set(ids)) == 2
        assert seen.finish == FINISH[fmt]["tool_use"]
        if provider == "gemini":
            # Synthetic ids are stable (same answer, same ids) and map results back by name.
            again = a.parse_chat(recorded(provider, "tools.json"))
            assert [c.id for c in again.tool_calls] == [c.id for c in resp.tool_calls]
            follow = parse_inbound(fmt, inbound_body("text", fmt))
            follow.messages.append(Message("assistant", list(resp.tool_calls)))
            follow.messages.append(Message("user", [ToolResultPart(c.id, [TextPart("ok")]) for c in resp.tool_calls]))
            body = orjson.loads(a.chat_request(ChatCall(follow, "gemini-2.5-flash")).body)
            names = [p["functionResponse"]["name"] for p in body["contents"][-1]["parts"]]
            assert names == ["get_weather", "get_time"]


@inbound
@matrix
def test_json_schema(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "json_schema") as out:
        if fmt == "anthropic":
            out["value"] = "n/a"  # the Messages API has no response_format
            return
        body = inbound_body("json_schema", fmt)
        if FAMILY[provider] in ("anthropic", "converse"):
            with pytest.raises(GatewayError) as info:
                upstream_for(provider, fmt, body)
            assert info.value.status == 400 and info.value.param == "response_format"
            assert "not supported" in info.value.message
            out["value"] = "400"
            return
        a, up, sent = upstream_for(provider, fmt, body)
        if provider == "gemini":
            config = sent["generationConfig"]
            assert config["responseMimeType"] == "application/json"
            schema = config["responseSchema"]
            assert "additionalProperties" not in schema
            assert schema["properties"]["temperature_c"] == {"type": "number", "nullable": True}
            assert schema["required"] == ["city", "temperature_c"]
        else:
            assert sent["response_format"] == body["response_format"]
        resp, native = answer(provider, fmt, a, "json_schema.json")
        assert orjson.loads(client_view(fmt, resp, native).text) == {"city": "Paris", "temperature_c": 18}


@inbound
@matrix
def test_stop_sequences(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "stop_sequences"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("stop_sequences", fmt))
        assert view(provider, up, sent).stop == ["END"]
        resp, native = answer(provider, fmt, a, "stop_sequence.json")
        seen = client_view(fmt, resp, native)
        reports_sequence = FAMILY[provider] in ("anthropic", "converse")
        assert seen.finish == FINISH[fmt]["stop_sequence" if reports_sequence else "end_turn"]
        if fmt == "anthropic" and FAMILY[provider] == "anthropic":
            assert seen.raw["stop_sequence"] == "END"


@inbound
@matrix
def test_max_tokens(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "max_tokens"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("max_tokens", fmt))
        assert view(provider, up, sent).max_tokens == 16
        if provider == "openai" and fmt == "anthropic":
            assert "max_completion_tokens" in sent  # api.openai.com's current field
        resp, native = answer(provider, fmt, a, "max_tokens.json")
        seen = client_view(fmt, resp, native)
        assert seen.finish == FINISH[fmt]["max_tokens"] and seen.output_tokens == 16


@inbound
@matrix
def test_sampling(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "sampling"):
        _, up, sent = upstream_for(provider, fmt, inbound_body("sampling", fmt))
        v = view(provider, up, sent)
        assert (v.temperature, v.top_p) == (0.3, 0.9)


@inbound
@matrix
def test_stream_tools(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "stream_tools"):
        a, up, sent = upstream_for(provider, fmt, inbound_body("stream_tools", fmt, stream=True))
        v = view(provider, up, sent)
        assert v.stream and up.stream
        if provider == "gemini":
            assert up.url.endswith(":streamGenerateContent?alt=sse")
        if FAMILY[provider] == "openai":
            assert sent["stream_options"] == {"include_usage": True}
        if provider.startswith("bedrock"):
            assert up.headers["accept"] == "application/vnd.amazon.eventstream"
        events = decode_stream(a, recorded(provider, stream_name(provider, "tools")))
        wire, back = client_stream(fmt, events)
        assert back.text == "Let me check."
        assert [(c.name, orjson.loads(c.arguments)) for c in back.tool_calls] == [
            ("get_weather", {"location": "Paris, France"}), ("get_time", {"timezone": "Europe/Paris"})]
        assert all(c.id for c in back.tool_calls) and len({c.id for c in back.tool_calls}) == 2
        assert back.stop_reason == "tool_use"
        assert (back.usage.input_tokens, back.usage.output_tokens) == (82, 51)
        if fmt == "openai":
            assert b'"finish_reason":"tool_calls"' in wire and wire.endswith(b"data: [DONE]\n\n")
        else:
            assert b"event: message_stop" in wire and b'"input_json_delta"' in wire


CACHE_WRITES = {"anthropic": 200, "bedrock-invoke": 200, "bedrock-converse": 200}


@inbound
@matrix
def test_usage_cache(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "usage_cache"):
        a, _, _ = upstream_for(provider, fmt, inbound_body("text", fmt))
        resp, native = answer(provider, fmt, a, "usage_cache.json")
        writes = CACHE_WRITES.get(provider, 0)
        # Our convention: input_tokens is the whole prompt, cache reads and writes included.
        # (recorded: OpenAI/Gemini prompt 2050 incl. 1792 cached; Anthropic/Bedrock 58 + 1792 read + 200 written)
        assert resp.usage.input_tokens == 2050
        assert resp.usage.cache_read_tokens == 1792 and resp.usage.cache_write_tokens == writes
        seen = client_view(fmt, resp, native)
        assert seen.cache_read == 1792
        assert seen.input_tokens == resp.usage.input_tokens
        if fmt == "anthropic":
            assert seen.cache_write == writes
            assert seen.raw["usage"]["input_tokens"] == resp.usage.input_tokens - 1792 - writes


@inbound
@matrix
def test_usage_reasoning(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "usage_reasoning"):
        a, _, _ = upstream_for(provider, fmt, inbound_body("text", fmt))
        resp, native = answer(provider, fmt, a, "usage_reasoning.json")
        seen = client_view(fmt, resp, native)
        assert seen.text == "The answer is 42."
        assert seen.output_tokens == 264  # reasoning is billed as output everywhere
        if FAMILY[provider] in ("openai", "gemini"):
            assert resp.usage.reasoning_tokens == 256
            if fmt == "openai":
                assert seen.reasoning_tokens == 256
        else:  # Anthropic and Bedrock report the thinking itself, not a separate count
            assert resp.content[0].text.startswith("The user asks")  # type: ignore[union-attr]
            if fmt == "anthropic":
                assert seen.thinking == "The user asks for the answer; it is 42."
        if provider == "gemini" and fmt == "anthropic":
            assert seen.thinking == "The user asks for the answer; it is 42."


STOP_CASES: dict[str, list[tuple[str, str]]] = {
    "openai": [("text.json", "end_turn"), ("tools.json", "tool_use"), ("max_tokens.json", "max_tokens"),
               ("content_filter.json", "content_filter")],
    "anthropic": [("text.json", "end_turn"), ("tools.json", "tool_use"), ("stop_sequence.json", "stop_sequence"),
                  ("max_tokens.json", "max_tokens"), ("refusal.json", "refusal")],
    "bedrock-converse": [("text.json", "end_turn"), ("tools.json", "tool_use"), ("stop_sequence.json", "stop_sequence"),
                         ("max_tokens.json", "max_tokens"), ("guardrail.json", "content_filter")],
    "gemini": [("text.json", "end_turn"), ("tools.json", "tool_use"), ("max_tokens.json", "max_tokens"),
               ("safety.json", "content_filter"), ("recitation.json", "content_filter"),
               ("prompt_blocked.json", "content_filter")],
}
STOP_CASES["azure-openai"] = STOP_CASES["openai"]
STOP_CASES["bedrock-invoke"] = STOP_CASES["anthropic"]


@inbound
@matrix
def test_stop_reasons(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "stop_reasons"):
        a, _, _ = upstream_for(provider, fmt, inbound_body("text", fmt))
        for name, expected in STOP_CASES[provider]:
            resp, native = answer(provider, fmt, a, name)
            assert resp.stop_reason == expected, name
            seen = client_view(fmt, resp, native)
            assert seen.finish == FINISH[fmt][expected], name
            if provider == "gemini" and expected == "content_filter" and name != "recitation.json":
                assert seen.text.startswith("[Gemini blocked"), seen.text
                assert ("PROHIBITED_CONTENT" if name == "prompt_blocked.json" else
                        "SAFETY (HARM_CATEGORY_DANGEROUS_CONTENT)") in seen.text
        if provider == "gemini":
            events = decode_stream(a, recorded(provider, "stream_safety.sse"))
            _, back = client_stream(fmt, events)
            # read back from the client's stream: Anthropic's vocabulary calls it a refusal
            assert back.stop_reason == ("refusal" if fmt == "anthropic" else "content_filter")
            assert "Gemini blocked the response: SAFETY" in back.text


ERROR_CASES: dict[str, list[tuple[str, int, str, float | None]]] = {
    "openai": [("error_429.http", 429, "Rate limit reached", 1.2), ("error_503.http", 503, "overloaded", None),
               ("error_400.http", 400, "string too long", None)],
    "azure-openai": [("error_429.http", 429, "exceeded token rate limit", 7.0),
                     ("error_503.http", 503, "temporarily unable", None),
                     ("error_400.http", 400, "content management policy", None)],
    "anthropic": [("error_429.http", 429, "rate limit", 12.0), ("error_529.http", 529, "Overloaded", None),
                  ("error_400.http", 400, "String should match pattern", None)],
    "bedrock-converse": [
        ("error_429.http", 429, "ThrottlingException: Too many requests", None),
        ("error_model_not_ready.http", 503, "ModelNotReadyException", None),
        ("error_503.http", 503, "ServiceUnavailableException", None),
        ("error_timeout.http", 504, "ModelTimeoutException", None),
        ("error_model_error.http", 502, "ModelErrorException", None),
        ("error_quota.http", 429, "ServiceQuotaExceededException", None),
        ("error_400.http", 400, "ValidationException: The model returned", None),
        ("error_403.http", 403, "AccessDeniedException", None),
        ("error_404.http", 404, "ResourceNotFoundException", None),
        ("error_500.http", 500, "InternalServerException", None)],
    "gemini": [("error_429.http", 429, "exceeded your current quota", None), ("error_503.http", 503, "overloaded", None),
               ("error_400.http", 400, "function response turn", None),
               ("error_403.http", 403, "unregistered callers", None),
               ("error_vertex_429.http", 429, "Resource exhausted", None)],
}
ERROR_CASES["bedrock-invoke"] = ERROR_CASES["bedrock-converse"]
LEAKY = {"openai": "openai", "azure-openai": "azure", "anthropic": "anthropic", "gemini": "gemini",
         "bedrock-converse": "aws_secret", "bedrock-invoke": "aws_secret"}


@inbound
@matrix
def test_errors(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "errors"):
        a, _ = adapter(provider)
        for name, status, fragment, retry_after in ERROR_CASES[provider]:
            code, headers, body = recorded_http(provider, name)
            err = a.error(code, headers, body)
            assert err.status == status, name
            assert fragment in err.message and err.message.startswith(f"{provider}: "), err.message
            if retry_after is not None:
                assert err.retry_after == pytest.approx(retry_after), name
        secret = SECRETS[LEAKY[provider]]
        echo = orjson.dumps({"error": {"message": f"Incorrect API key provided: {secret}"}, "message": f"key {secret}"})
        leaked = a.error(401, {}, echo)
        assert secret not in leaked.message and "[redacted]" in leaked.message


BROKEN = {"openai": 502, "azure-openai": 502, "anthropic": 529, "bedrock-invoke": 429, "bedrock-converse": 502,
          "gemini": 503}


@inbound
@matrix
def test_broken_streams(fmt: str, provider: str) -> None:
    with cell(fmt, provider, "broken_streams"):
        a, _ = adapter(provider)
        for kind, status in (("truncated", 502), ("malformed", 502), ("error", BROKEN[provider])):
            data = recorded(provider, stream_name(provider, kind))
            with pytest.raises(UpstreamError) as info:
                decode_stream(a, data)
            assert info.value.status == status, (kind, info.value)
        # A whole stream still decodes when it arrives in one piece.
        whole = decode_stream(a, recorded(provider, stream_name(provider, "tools")), piece=1 << 20)
        assert sum(isinstance(e, ToolCallStart) for e in whole) == 2
        assert isinstance(whole[-1], StreamEnd) and whole[-1].stop_reason == "tool_use"


def test_readme_table_agrees_with_every_cell_that_ran() -> None:
    """Last in the module: the README's providers x features table, cell by cell, against
    the outcomes the tests above recorded (only the cells that ran, so `-k` still works)."""
    spec = importlib.util.spec_from_file_location("provider_matrix", ROOT / "scripts" / "provider_matrix.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shown = script.readme_cells((ROOT / "README.md").read_text())
    checked = 0
    for fmt, rows in RESULTS.items():
        for provider, cells in rows.items():
            for feature, outcome in cells.items():
                assert shown.get(fmt, {}).get(provider, {}).get(feature) == script.SYMBOL[outcome], (
                    f"README says {shown.get(fmt, {}).get(provider, {}).get(feature)!r} for {fmt}/{provider}/"
                    f"{feature}, the test says {outcome!r}: run scripts/provider_matrix.py --write")
                checked += 1
    assert checked == sum(len(cells) for rows in RESULTS.values() for cells in rows.values())
