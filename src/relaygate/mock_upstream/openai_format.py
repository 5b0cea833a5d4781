"""OpenAI wire format (also Azure OpenAI): chat completions (JSON and SSE), embeddings, models."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from aiohttp import web

from relaygate.mock_upstream.embeddings import DEFAULT_DIMENSIONS, embedding_vector, vector_base64
from relaygate.mock_upstream.exchange import (
    ErrorResponder,
    apply_fault,
    json_response,
    mock_reply,
    read_json,
    reject,
    send_body,
    send_stream,
    sse_event,
    state_of,
)
from relaygate.mock_upstream.generate import MockReply, count_tokens, split_chunks
from relaygate.mock_upstream.prompt_cache import CacheBlock

# OpenAI caches prompt prefixes automatically, from 1024 tokens on.
_AUTO_CACHE_MIN_TOKENS = 1024
# Reasoning models report this many hidden reasoning tokens inside completion_tokens.
_REASONING_TOKENS = 16
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")

_FINISH_REASONS = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

# What OpenAI sends when a stream fails after its 200 (no [DONE] follows).
_STREAM_ERROR = sse_event({"error": {"message": "The server had an error while processing your request.",
                                     "type": "server_error", "param": None, "code": None}})

MODEL_IDS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o4-mini", "text-embedding-3-small", "text-embedding-3-large")


def openai_error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    """OpenAI's error envelope: {"error": {"message", "type", "param", "code"}}."""
    err_type, code = _ERROR_TYPES.get(status, ("server_error", None))
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return json_response(body, status, headers)


def azure_error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    """Azure OpenAI's envelope: the OpenAI one with the status as a string code."""
    return json_response({"error": {"code": str(status), "message": message}}, status, headers)


def bearer_key(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions."""
    key = bearer_key(request)
    body = await read_json(request)
    model = str(body.get("model", "")) if body else ""
    if key is None:
        return reject(request, "openai.chat", model, openai_error, 401,
                      "You didn't provide an API key. Use 'Authorization: Bearer YOUR_KEY'.")
    if body is None or not model:
        return reject(request, "openai.chat", model, openai_error, 400,
                      "We could not parse the JSON body of your request, or 'model' is missing.")
    return await serve_chat(request, "openai.chat", model, key, body, openai_error)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """POST /v1/embeddings."""
    key = bearer_key(request)
    body = await read_json(request)
    model = str(body.get("model", "")) if body else ""
    if key is None:
        return reject(request, "openai.embeddings", model, openai_error, 401,
                      "You didn't provide an API key. Use 'Authorization: Bearer YOUR_KEY'.")
    if body is None or not model:
        return reject(request, "openai.embeddings", model, openai_error, 400,
                      "We could not parse the JSON body of your request, or 'model' is missing.")
    return await serve_embeddings(request, "openai.embeddings", model, body, openai_error)


def models_list() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 1715367049, "owned_by": "mock"} for m in MODEL_IDS],
    }


async def serve_chat(
    request: web.Request,
    kind: str,
    model: str,
    api_key: str,
    body: dict[str, Any],
    errors: ErrorResponder,
) -> web.StreamResponse:
    """A validated chat-completions request, answered in OpenAI's format (shared with Azure)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return reject(request, kind, model, errors, 400, "'messages' must be a non-empty array.")
    stream = bool(body.get("stream"))
    state = state_of(request)
    fault = state.decide(model, stream)
    early = await apply_fault(request, kind, model, fault, errors)
    if early is not None:
        return early

    tools = body.get("tools") or []
    blocks = [orjson.dumps(m) for m in messages]
    if tools:
        blocks.insert(0, orjson.dumps(tools))
    prompt_chars = sum(len(b) for b in blocks)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    reply = mock_reply(state, fault, _last_user_text(messages), prompt_chars, bool(tools),
                       int(max_tokens) if max_tokens else None)
    cached = 0
    if reply.input_tokens >= _AUTO_CACHE_MIN_TOKENS:
        usage = state.prompt_cache.account(
            f"openai|{api_key}|{model}",
            [CacheBlock(b, math.ceil(len(b) / 4), True) for b in blocks],
        )
        cached = usage.read if usage.read >= _AUTO_CACHE_MIN_TOKENS else 0
    reasoning = _REASONING_TOKENS if model.startswith(_REASONING_PREFIXES) else 0
    usage_json = _usage(reply, cached, reasoning)
    seq = state.next_seq()
    completion_id = f"chatcmpl-mock{seq}"
    created = int(time.time())
    headers = {"x-request-id": f"req_mock{seq}", "openai-processing-ms": "1"}
    finish = _FINISH_REASONS.get(reply.stop_reason, "stop")

    if not stream:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text if not reply.tool_calls else (reply.text or None),
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls
            ]
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage_json,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        return await send_body(request, kind, model, fault, orjson.dumps(payload), headers)

    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_mock"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        event: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            event["usage"] = None
        return sse_event(event)

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    for piece in split_chunks(reply.text):
        chunks.append(chunk({"content": piece}))
    for index, call in enumerate(reply.tool_calls):
        chunks.append(chunk({"tool_calls": [{
            "index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]}))
        for piece in split_chunks(call.arguments, 12) if call.arguments else []:
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, finish))
    if include_usage:
        chunks.append(sse_event({**base, "choices": [], "usage": usage_json}))
    chunks.append(b"data: [DONE]\n\n")
    return await send_stream(request, kind, model, fault, chunks, "text/event-stream", headers, _STREAM_ERROR)


async def serve_embeddings(
    request: web.Request, kind: str, model: str, body: dict[str, Any], errors: ErrorResponder
) -> web.StreamResponse:
    """A validated embeddings request, answered in OpenAI's format (shared with Azure)."""
    inputs = _embedding_inputs(body.get("input"))
    if inputs is None:
        return reject(request, kind, model, errors, 400,
                      "'input' must be a string, an array of strings, or an array of token arrays.")
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    if not isinstance(dims, int) or not 1 <= dims <= 4096:
        return reject(request, kind, model, errors, 400, "'dimensions' must be an integer in [1, 4096].")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        return reject(request, kind, model, errors, 400, "'encoding_format' must be 'float' or 'base64'.")
    fault = state_of(request).decide(model, False)
    early = await apply_fault(request, kind, model, fault, errors)
    if early is not None:
        return early
    data = []
    tokens = 0
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dims)
        tokens += max(1, count_tokens(text))
        data.append({
            "object": "embedding",
            "index": index,
            "embedding": vector_base64(vector) if fmt == "base64" else vector,
        })
    payload = {"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return await send_body(request, kind, model, fault, orjson.dumps(payload))


def _embedding_inputs(raw: Any) -> list[str] | None:
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(x, str) for x in raw):
        return list(raw)
    if all(isinstance(x, int) for x in raw):
        return [" ".join(map(str, raw))]  # one token array
    if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
        return [" ".join(map(str, x)) for x in raw]
    return None


def _usage(reply: MockReply, cached: int, reasoning: int) -> dict[str, Any]:
    completion = reply.output_tokens + reasoning
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.input_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _last_user_text(messages: list[Any]) -> str:
    """The text the model answers: the last user turn, or the tool results after it
    (so an agent loop that sends results back gets an answer instead of the same call)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "tool":
            content = message.get("content")
            return content if isinstance(content, str) else "\n".join(
                str(p.get("text", "")) for p in content or [] if isinstance(p, dict))
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    str(part.get("text", ""))
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
            return ""
    return ""
