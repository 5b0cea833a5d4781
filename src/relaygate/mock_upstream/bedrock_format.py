"""AWS Bedrock runtime wire format: Converse (JSON and event stream) and InvokeModel
(Anthropic-on-Bedrock bodies; Titan-style embeddings), with Bedrock's error shape.

Usage follows Bedrock: Converse's `inputTokens` excludes cache reads and writes, which are
reported beside it in `cacheReadInputTokens` / `cacheWriteInputTokens`; `totalTokens`
counts all of them. A `cachePoint` block marks the end of a cacheable prefix.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import orjson
from aiohttp import web

from relaygate.mock_upstream import anthropic_format, eventstream
from relaygate.mock_upstream.embeddings import DEFAULT_DIMENSIONS, embedding_vector
from relaygate.mock_upstream.exchange import (
    apply_fault,
    json_response,
    mock_reply,
    read_json,
    reject,
    send_body,
    send_stream,
    state_of,
)
from relaygate.mock_upstream.generate import MockReply, count_tokens, split_chunks
from relaygate.mock_upstream.prompt_cache import MAX_BREAKPOINTS, CacheBlock, CacheUsage

EVENT_STREAM = "application/vnd.amazon.eventstream"
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"

# What a Bedrock stream sends when the model fails after the 200.
_STREAM_ERROR = eventstream.exception(
    "modelStreamErrorException",
    b'{"message":"The model failed while streaming (injected by mock upstream).",'
    b'"originalStatusCode":500,"originalMessage":"Internal server error"}',
)

_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def bedrock_error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    """Bedrock's error: the exception name in `x-amzn-ErrorType`, `{"message"}` as body."""
    name = _EXCEPTIONS.get(status, "ServiceUnavailableException" if status >= 500 else "ValidationException")
    return _error_named(status, name, message, headers)


def _error_named(status: int, name: str, message: str, headers: dict[str, str]) -> web.Response:
    all_headers = {
        **headers,
        "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": "mock-request-id",
    }
    return json_response({"message": message}, status, all_headers)


def _access_key(request: web.Request) -> str | None:
    """The caller's identity: the SigV4 credential's access key, or a Bedrock API key."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("AWS4-HMAC-SHA256 "):
        credential = auth.split("Credential=", 1)[-1]
        return credential.split("/", 1)[0] or "unknown"
    if auth.startswith("Bearer ") and auth[7:].strip():
        return auth[7:].strip()  # Bedrock API keys
    return None


def _unauthenticated(request: web.Request, kind: str, model: str) -> web.Response:
    state_of(request).stats.record(kind, model, "rejected_403")
    return _error_named(403, "UnrecognizedClientException",
                        "The security token included in the request is invalid.", {})


async def converse(request: web.Request) -> web.StreamResponse:
    """POST /model/{modelId}/converse."""
    return await _converse(request, stream=False)


async def converse_stream(request: web.Request) -> web.StreamResponse:
    """POST /model/{modelId}/converse-stream."""
    return await _converse(request, stream=True)


async def _converse(request: web.Request, stream: bool) -> web.StreamResponse:
    kind = "bedrock.converse_stream" if stream else "bedrock.converse"
    model = request.match_info["model_id"]
    access_key = _access_key(request)
    if access_key is None:
        return _unauthenticated(request, kind, model)
    body = await read_json(request)
    messages = body.get("messages") if body else None
    if body is None or not isinstance(messages, list) or not messages:
        return reject(request, kind, model, bedrock_error, 400,
                      "1 validation error detected: Value at 'messages' failed to satisfy constraint: "
                      "Member must not be null")
    blocks = _converse_cache_blocks(body)
    breakpoints = sum(b.breakpoint for b in blocks)
    if breakpoints > MAX_BREAKPOINTS:
        return reject(request, kind, model, bedrock_error, 400,
                      f"The number of cache points ({breakpoints}) exceeds the maximum of {MAX_BREAKPOINTS}.")
    state = state_of(request)
    fault = state.decide(model, stream)
    early = await apply_fault(request, kind, model, fault, bedrock_error)
    if early is not None:
        return early
    started = time.perf_counter()
    usage = state.prompt_cache.account(f"bedrock|{access_key}|{model}", blocks, state.config.cache_min_tokens)
    config = body.get("inferenceConfig") or {}
    max_tokens = config.get("maxTokens") if isinstance(config, dict) else None
    tools = (body.get("toolConfig") or {}).get("tools") or []
    reply = mock_reply(state, fault, _last_user_text(messages), usage.total * 4, bool(tools),
                       int(max_tokens) if max_tokens else None)
    usage_json = _converse_usage(reply, usage)
    headers = {"x-amzn-RequestId": f"mock-{state.next_seq()}"}
    latency_ms = max(1, int((time.perf_counter() - started) * 1000))
    if not stream:
        payload = {
            "output": {"message": {"role": "assistant", "content": _converse_content(reply)}},
            "stopReason": reply.stop_reason,
            "usage": usage_json,
            "metrics": {"latencyMs": latency_ms},
        }
        return await send_body(request, kind, model, fault, orjson.dumps(payload), headers)
    return await send_stream(request, kind, model, fault,
                             _converse_events(reply, usage_json, latency_ms), EVENT_STREAM, headers, _STREAM_ERROR)


def _converse_events(reply: MockReply, usage_json: dict[str, Any], latency_ms: int) -> list[bytes]:
    ev = eventstream.event
    events = [ev("messageStart", b'{"role":"assistant"}')]
    index = 0
    if reply.text or not reply.tool_calls:
        for piece in split_chunks(reply.text):
            events.append(ev("contentBlockDelta", orjson.dumps({"contentBlockIndex": index,
                                                                "delta": {"text": piece}})))
        events.append(ev("contentBlockStop", orjson.dumps({"contentBlockIndex": index})))
        index += 1
    for call in reply.tool_calls:
        start = {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": call.id, "name": call.name}}}
        events.append(ev("contentBlockStart", orjson.dumps(start)))
        arguments = orjson.dumps(anthropic_format.tool_input(call.arguments)).decode()
        for piece in split_chunks(arguments, 12):
            delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
            events.append(ev("contentBlockDelta", orjson.dumps(delta)))
        events.append(ev("contentBlockStop", orjson.dumps({"contentBlockIndex": index})))
        index += 1
    events.append(ev("messageStop", orjson.dumps({"stopReason": reply.stop_reason})))
    events.append(ev("metadata", orjson.dumps({"usage": usage_json, "metrics": {"latencyMs": latency_ms}})))
    return events


def _converse_content(reply: MockReply) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.text or not reply.tool_calls:
        content.append({"text": reply.text})
    for call in reply.tool_calls:
        content.append({"toolUse": {"toolUseId": call.id, "name": call.name,
                                    "input": anthropic_format.tool_input(call.arguments)}})
    return content


def _converse_usage(reply: MockReply, usage: CacheUsage) -> dict[str, Any]:
    return {
        "inputTokens": usage.uncached,
        "outputTokens": reply.output_tokens,
        "totalTokens": usage.total + reply.output_tokens,
        "cacheReadInputTokens": usage.read,
        "cacheWriteInputTokens": usage.write,
    }


def _converse_cache_blocks(body: dict[str, Any]) -> list[CacheBlock]:
    """Blocks in cache order (tools -> system -> messages); `cachePoint` ends a prefix."""
    blocks: list[CacheBlock] = []

    def add(prefix: bytes, block: Any) -> None:
        if isinstance(block, dict) and "cachePoint" in block:
            if blocks:
                last = blocks[-1]
                blocks[-1] = CacheBlock(last.identity, last.tokens, True)
            return
        data = orjson.dumps(block)
        blocks.append(CacheBlock(prefix + data, max(1, math.ceil(len(data) / 4)), False))

    tool_config = body.get("toolConfig")
    if isinstance(tool_config, dict):
        for tool in tool_config.get("tools") or []:
            add(b"tool:", tool)
    for block in body.get("system") or []:
        add(b"system:", block)
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            role = str(message.get("role", "")).encode() + b":"
            for block in message.get("content") or []:
                add(role, block)
    return blocks


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(
                str(block["text"]) for block in message.get("content") or []
                if isinstance(block, dict) and "text" in block
            )
    return ""


async def invoke(request: web.Request) -> web.StreamResponse:
    """POST /model/{modelId}/invoke."""
    return await _invoke(request, stream=False)


async def invoke_stream(request: web.Request) -> web.StreamResponse:
    """POST /model/{modelId}/invoke-with-response-stream."""
    return await _invoke(request, stream=True)


async def _invoke(request: web.Request, stream: bool) -> web.StreamResponse:
    kind = "bedrock.invoke_stream" if stream else "bedrock.invoke"
    model = request.match_info["model_id"]
    access_key = _access_key(request)
    if access_key is None:
        return _unauthenticated(request, kind, model)
    body = await read_json(request)
    if body is not None and "inputText" in body and not stream:
        return await _titan_embedding(request, model, body)
    if body is not None and body.get("anthropic_version") != BEDROCK_ANTHROPIC_VERSION:
        return reject(request, kind, model, bedrock_error, 400,
                      f"anthropic_version: must be {BEDROCK_ANTHROPIC_VERSION!r}")
    problem = anthropic_format.validation_error(body)
    if problem is not None or body is None:
        return reject(request, kind, model, bedrock_error, 400, problem or "invalid body")
    breakpoints = sum(b.breakpoint for b in anthropic_format.cache_blocks(body))
    if breakpoints > MAX_BREAKPOINTS:
        return reject(request, kind, model, bedrock_error, 400, anthropic_format.too_many_breakpoints(breakpoints))
    state = state_of(request)
    fault = state.decide(model, stream)
    early = await apply_fault(request, kind, model, fault, bedrock_error)
    if early is not None:
        return early
    started = time.perf_counter()
    result = anthropic_format.answer(state, fault, body, f"bedrock|{access_key}|{model}")
    usage = result.usage
    msg_id = f"msg_bdrk_mock{state.next_seq()}"
    headers = {"x-amzn-RequestId": f"mock-{msg_id}"}
    if not stream:
        headers.update({
            "x-amzn-bedrock-input-token-count": str(usage.uncached),
            "x-amzn-bedrock-output-token-count": str(result.output_tokens),
            "x-amzn-bedrock-cache-read-input-token-count": str(usage.read),
            "x-amzn-bedrock-cache-write-input-token-count": str(usage.write),
            "x-amzn-bedrock-invocation-latency": str(max(1, int((time.perf_counter() - started) * 1000))),
        })
        payload = anthropic_format.message_json(msg_id, model, result)
        return await send_body(request, kind, model, fault, orjson.dumps(payload), headers)
    latency_ms = max(1, int((time.perf_counter() - started) * 1000))
    chunks = []
    for item in anthropic_format.stream_events(msg_id, model, result):
        if item["type"] == "ping":
            continue  # Bedrock does not relay pings
        if item["type"] == "message_stop":
            item = {**item, "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": usage.uncached,
                "outputTokenCount": result.output_tokens,
                "invocationLatency": latency_ms,
                "firstByteLatency": latency_ms,
                "cacheReadInputTokenCount": usage.read,
                "cacheWriteInputTokenCount": usage.write,
            }}
        encoded = base64.b64encode(orjson.dumps(item)).decode()
        chunks.append(eventstream.event("chunk", orjson.dumps({"bytes": encoded})))
    headers["x-amzn-bedrock-content-type"] = "application/json"
    return await send_stream(request, kind, model, fault, chunks, EVENT_STREAM, headers, _STREAM_ERROR)


async def _titan_embedding(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    kind = "bedrock.invoke"
    text = body.get("inputText")
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    if not isinstance(text, str) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        return reject(request, kind, model, bedrock_error, 400, "inputText must be a string")
    fault = state_of(request).decide(model, False)
    early = await apply_fault(request, kind, model, fault, bedrock_error)
    if early is not None:
        return early
    payload = {"embedding": embedding_vector(text, dims), "inputTextTokenCount": max(1, count_tokens(text))}
    return await send_body(request, kind, model, fault, orjson.dumps(payload))
