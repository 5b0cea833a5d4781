"""Usage normalisation per provider, on recorded responses shaped as the providers document
them, and the hand-computed cost of each. The rule: our `input_tokens` is the whole prompt,
cache reads and writes included.

- Anthropic (Messages API) reports `input_tokens` BESIDE `cache_read_input_tokens` and
  `cache_creation_input_tokens` (docs.anthropic.com, prompt caching: "total input tokens =
  input_tokens + cache_creation_input_tokens + cache_read_input_tokens").
- Bedrock Converse reports `inputTokens` as the non-cached remainder too, the cache buckets
  beside it (docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html); Bedrock
  InvokeModel with an Anthropic body answers in Anthropic's own shape.
- OpenAI reports `prompt_tokens` INCLUDING `prompt_tokens_details.cached_tokens`.
- Gemini reports `promptTokenCount` INCLUDING `cachedContentTokenCount`; thinking tokens
  (`thoughtsTokenCount`) come beside `candidatesTokenCount` and are billed as output.

The seed's example: 20,000 prompt tokens of which 15,000 cache reads, 1,000 output.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats import openai as openai_fmt
from relaygate.formats.types import Usage, collect_stream
from relaygate.providers.bedrock import converse
from relaygate.providers.gemini import codec as gemini
from relaygate.usage.pricing import Pricing

SEED = Usage(input_tokens=20_000, output_tokens=1_000, cache_read_tokens=15_000)

ANTHROPIC_RESPONSE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 5_000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 15_000,
              "output_tokens": 1_000},
}
BEDROCK_CONVERSE_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello!"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 5_000, "outputTokens": 1_000, "totalTokens": 21_000,
              "cacheReadInputTokens": 15_000, "cacheWriteInputTokens": 0},
    "metrics": {"latencyMs": 812},
}
OPENAI_RESPONSE = {
    "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1741569952, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3_000, "completion_tokens": 200, "total_tokens": 3_200,
              "prompt_tokens_details": {"cached_tokens": 1_024, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
}
GEMINI_RESPONSE = {
    "candidates": [{"content": {"parts": [{"text": "Hello!"}], "role": "model"}, "finishReason": "STOP",
                    "index": 0}],
    "usageMetadata": {"promptTokenCount": 20_000, "cachedContentTokenCount": 15_000,
                      "candidatesTokenCount": 800, "thoughtsTokenCount": 200, "totalTokenCount": 21_000},
    "modelVersion": "gemini-2.5-pro", "responseId": "abc",
}


def test_anthropic_direct_counts_cache_reads_into_the_prompt() -> None:
    resp = anthropic_fmt.parse_response(ANTHROPIC_RESPONSE)
    assert resp.usage == SEED
    # 5,000 x $3 + 15,000 x $0.30 + 1,000 x $15 = $0.0345
    assert Pricing().cost("anthropic", "anthropic-main", resp.model, resp.usage) == Decimal("0.0345")


def test_anthropic_cache_writes_count_into_the_prompt_too() -> None:
    body = {**ANTHROPIC_RESPONSE, "usage": {"input_tokens": 100, "cache_creation_input_tokens": 2_000,
                                            "cache_read_input_tokens": 0, "output_tokens": 50}}
    u = anthropic_fmt.parse_response(body).usage
    assert (u.input_tokens, u.cache_write_tokens) == (2_100, 2_000)
    # 100 x $3 + 2,000 x $3.75 + 50 x $15 = 300 + 7,500 + 750 -> $0.00855
    assert Pricing().cost("anthropic", "a", "claude-sonnet-4-5", u) == Decimal("0.00855")


def test_anthropic_stream_usage_from_message_start_and_delta() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": None, "usage": {"input_tokens": 5_000, "cache_creation_input_tokens": 0,
                                           "cache_read_input_tokens": 15_000, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello!"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 1_000}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    raw = b"".join(f"event: {n}\ndata: {orjson.dumps(d).decode()}\n\n".encode() for n, d in events)
    dec = anthropic_fmt.StreamDecoder()
    out = dec.feed(raw) + dec.close()
    assert collect_stream(out).usage == SEED


def test_bedrock_converse_counts_cache_reads_into_the_prompt() -> None:
    resp = converse.parse_response(BEDROCK_CONVERSE_RESPONSE)
    assert resp.usage == SEED
    # the `us.` geographic profile costs 10% more than global: $0.0345 x 1.1
    p = Pricing()
    assert p.cost("bedrock", "bedrock-us", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                  resp.usage) == Decimal("0.03795")
    assert p.cost("bedrock", "bedrock-us", "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
                  resp.usage) == Decimal("0.0345")


def test_bedrock_invoke_model_answers_in_anthropic_shape() -> None:
    assert anthropic_fmt.parse_response(ANTHROPIC_RESPONSE).usage == converse.parse_response(
        BEDROCK_CONVERSE_RESPONSE).usage


def test_openai_prompt_already_includes_cached_tokens() -> None:
    resp = openai_fmt.parse_response(OPENAI_RESPONSE)
    assert resp.usage == Usage(input_tokens=3_000, output_tokens=200, cache_read_tokens=1_024)
    # 1,976 x $2.50 + 1,024 x $1.25 + 200 x $10 = $0.00822
    assert Pricing().cost("openai", "openai-main", resp.model, resp.usage) == Decimal("0.00822")


def test_openai_reasoning_tokens_are_output() -> None:
    body = {**OPENAI_RESPONSE, "model": "o3", "usage": {
        "prompt_tokens": 1_000, "completion_tokens": 5_000, "total_tokens": 6_000,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 4_500}}}
    u = openai_fmt.parse_response(body).usage
    assert (u.output_tokens, u.reasoning_tokens) == (5_000, 4_500)
    # o3 since 2025-06-10: 1,000 x $2 + 5,000 x $8 = $0.042 (reasoning is not billed twice)
    assert Pricing().cost("openai", "o", "o3", u) == Decimal("0.042")


def test_gemini_prompt_includes_cached_content_and_thoughts_are_output() -> None:
    resp = gemini.parse_response(GEMINI_RESPONSE)
    assert resp.usage == Usage(input_tokens=20_000, output_tokens=1_000, cache_read_tokens=15_000,
                               reasoning_tokens=200)
    # gemini-2.5-pro: 5,000 x $1.25 + 15,000 x $0.125 + 1,000 x $10 = 6,250 + 1,875 + 10,000 -> $0.018125
    assert Pricing().cost("gemini", "gemini-main", "gemini-2.5-pro", resp.usage) == Decimal("0.018125")


def test_anthropic_stream_with_cumulative_usage_in_message_delta() -> None:
    # Newer API versions repeat the whole (cumulative) usage in message_delta.
    full = {"input_tokens": 5_000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 15_000}
    events = [
        {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "c",
                                              "content": [], "usage": {**full, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {**full, "output_tokens": 1_000}},
        {"type": "message_stop"},
    ]
    raw = b"".join(f"event: {d['type']}\ndata: {orjson.dumps(d).decode()}\n\n".encode() for d in events)
    dec = anthropic_fmt.StreamDecoder()
    assert collect_stream(dec.feed(raw) + dec.close()).usage == SEED


def test_openai_stream_usage_chunk() -> None:
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
        {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [],
         "usage": OPENAI_RESPONSE["usage"]},
    ]
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    dec = openai_fmt.StreamDecoder()
    assert collect_stream(dec.feed(raw) + dec.close()).usage == Usage(3_000, 200, 1_024)


def test_gemini_stream_usage_from_the_last_chunk() -> None:
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 20_000, "cachedContentTokenCount": 15_000},
         "modelVersion": "gemini-2.5-pro", "responseId": "r"},
        {"candidates": [{"content": {"parts": [{"text": "lo!"}], "role": "model"}, "finishReason": "STOP",
                         "index": 0}], "usageMetadata": GEMINI_RESPONSE["usageMetadata"],
         "modelVersion": "gemini-2.5-pro", "responseId": "r"},
    ]
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)
    dec = gemini.StreamDecoder("gemini-main")
    got = collect_stream(dec.feed(raw) + dec.close()).usage
    assert got == Usage(input_tokens=20_000, output_tokens=1_000, cache_read_tokens=15_000, reasoning_tokens=200)
