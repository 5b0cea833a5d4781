"""Anthropic Messages wire format: JSON and SSE answers, errors, prompt-cache accounting.

The message and event builders are shared with Anthropic-on-Bedrock (`invoke`).
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from relaygate.mock_upstream.exchange import (
    MockState,
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
from relaygate.mock_upstream.faults import Fault
from relaygate.mock_upstream.generate import MockReply, count_tokens, split_chunks
from relaygate.mock_upstream.openai_format import bearer_key
from relaygate.mock_upstream.prompt_cache import MAX_BREAKPOINTS, CacheBlock, CacheUsage

KIND = "anthropic.messages"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

# The event an overloaded Anthropic stream ends with (HTTP status already sent as 200).
STREAM_ERROR_EVENT = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
STREAM_ERROR = sse_event(STREAM_ERROR_EVENT, "error")

MODEL_IDS = ("claude-sonnet-4-5", "claude-3-7-sonnet-latest", "claude-haiku-4-5", "claude-opus-4-1")


def anthropic_error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    """Anthropic's error envelope: {"type": "error", "error": {"type", "message"}}."""
    err_type = _ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": err_type, "message": message}, "request_id": "req_mock"}
    return json_response(body, status, headers)


def models_list() -> dict[str, Any]:
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-02-19T00:00:00Z"} for m in MODEL_IDS
    ]
    return {"data": data, "has_more": False, "first_id": MODEL_IDS[0], "last_id": MODEL_IDS[-1]}


def validation_error(body: dict[str, Any] | None) -> str | None:
    """The message of Anthropic's 400 for a malformed Messages body, or None when it is fine."""
    if body is None:
        return "The request body is not valid JSON."
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Input should be a valid integer greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty array)"
    return None


async def messages(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages."""
    body = await read_json(request)
    model = str(body.get("model", "")) if body else ""
    # The anthropic SDK 2.x sends its key as `Authorization: Bearer`; older ones as x-api-key.
    api_key = request.headers.get("x-api-key") or bearer_key(request)
    if not api_key:
        return reject(request, KIND, model, anthropic_error, 401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return reject(request, KIND, model, anthropic_error, 400, "anthropic-version: header is required")
    problem = validation_error(body) or (None if model else "model: Field required")
    if problem is not None or body is None:
        return reject(request, KIND, model, anthropic_error, 400, problem or "invalid body")
    breakpoints = sum(b.breakpoint for b in cache_blocks(body))
    if breakpoints > MAX_BREAKPOINTS:
        return reject(request, KIND, model, anthropic_error, 400, too_many_breakpoints(breakpoints))
    stream = bool(body.get("stream"))
    state = state_of(request)
    fault = state.decide(model, stream)
    early = await apply_fault(request, KIND, model, fault, anthropic_error)
    if early is not None:
        return early
    result = answer(state, fault, body, f"anthropic|{api_key}|{model}")
    msg_id = f"msg_mock{state.next_seq()}"
    headers = {"request-id": f"req_mock_{msg_id}"}
    if not stream:
        payload = message_json(msg_id, model, result)
        return await send_body(request, KIND, model, fault, orjson.dumps(payload), headers)
    chunks = [sse_event(event, event["type"]) for event in stream_events(msg_id, model, result)]
    return await send_stream(request, KIND, model, fault, chunks, "text/event-stream", headers, STREAM_ERROR)


async def count_tokens_endpoint(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages/count_tokens."""
    body = await read_json(request)
    if body is None or not isinstance(body.get("messages"), list):
        return anthropic_error(400, "messages: Field required", {})
    return json_response({"input_tokens": sum(b.tokens for b in cache_blocks(body))})


def too_many_breakpoints(found: int) -> str:
    return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."


@dataclass(frozen=True, slots=True)
class AnthropicAnswer:
    """A Messages answer: the reply, the cache split of its input, and its thinking text
    when the request enabled extended thinking."""

    reply: MockReply
    usage: CacheUsage
    thinking: str | None = None

    @property
    def output_tokens(self) -> int:
        return self.reply.output_tokens + (count_tokens(self.thinking) if self.thinking else 0)

    @property
    def signature(self) -> str:
        digest = hashlib.blake2b((self.thinking or "").encode(), digest_size=24).digest()
        return "mocksig" + base64.b64encode(digest).decode()


def answer(state: MockState, fault: Fault, body: dict[str, Any], cache_scope: str) -> AnthropicAnswer:
    """The answer to a validated Messages body (shared with Anthropic-on-Bedrock)."""
    blocks = cache_blocks(body)
    usage = state.prompt_cache.account(cache_scope, blocks, state.config.cache_min_tokens)
    text = last_user_text(body["messages"])
    reply = mock_reply(state, fault, text, usage.total * 4, bool(body.get("tools")), int(body["max_tokens"]))
    thinking_config = body.get("thinking")
    thinking = None
    if isinstance(thinking_config, dict) and thinking_config.get("type") in ("enabled", "adaptive"):
        thinking = "mock thinking about: " + text[:80]
    return AnthropicAnswer(reply, usage, thinking)


def cache_blocks(body: dict[str, Any]) -> list[CacheBlock]:
    """The prompt as blocks in cache order (tools -> system -> messages), breakpoints marked
    by `cache_control`; a block's tokens are ceil(chars / 4) of its JSON without it."""
    blocks: list[CacheBlock] = []

    def add(prefix: bytes, block: Any) -> None:
        marked = isinstance(block, dict) and "cache_control" in block
        if marked:
            block = {k: v for k, v in block.items() if k != "cache_control"}
        data = orjson.dumps(block)
        blocks.append(CacheBlock(prefix + data, max(1, math.ceil(len(data) / 4)), marked))

    for tool in body.get("tools") or []:
        add(b"tool:", tool)
    system = body.get("system")
    if isinstance(system, str) and system:
        add(b"system:", {"type": "text", "text": system})
    elif isinstance(system, list):
        for block in system:
            add(b"system:", block)
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "")).encode() + b":"
        content = message.get("content")
        if isinstance(content, str):
            add(role, {"type": "text", "text": content})
        elif isinstance(content, list):
            for block in content:
                add(role, block)
    return blocks


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(_block_text(b) for b in content if isinstance(b, dict))
            return ""
    return ""


def _block_text(block: dict[str, Any]) -> str:
    """Text blocks, and the content of tool results (answered like user text)."""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        inner = block.get("content")
        if isinstance(inner, str):
            return inner
        return "\n".join(str(c.get("text", "")) for c in inner or [] if isinstance(c, dict))
    return ""


def usage_json(usage: CacheUsage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.uncached,
        "cache_creation_input_tokens": usage.write,
        "cache_read_input_tokens": usage.read,
        "cache_creation": {"ephemeral_5m_input_tokens": usage.write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def content_json(result: AnthropicAnswer) -> list[dict[str, Any]]:
    reply = result.reply
    content: list[dict[str, Any]] = []
    if result.thinking is not None:
        content.append({"type": "thinking", "thinking": result.thinking, "signature": result.signature})
    if reply.text or not reply.tool_calls:
        content.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)})
    return content


def message_json(msg_id: str, model: str, result: AnthropicAnswer) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_json(result),
        "stop_reason": result.reply.stop_reason,
        "stop_sequence": None,
        "usage": usage_json(result.usage, result.output_tokens),
    }


def stream_events(msg_id: str, model: str, result: AnthropicAnswer) -> list[dict[str, Any]]:
    """The SSE events of one answer, message_start to message_stop."""
    reply, usage = result.reply, result.usage
    start = {**message_json(msg_id, model, result), "content": [], "stop_reason": None}
    start["usage"] = usage_json(usage, output_tokens=1)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    index = 0
    if result.thinking is not None:
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        events.append({"type": "ping"})
        for piece in split_chunks(result.thinking):
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": piece}})
        events.append({"type": "content_block_delta", "index": index,
                       "delta": {"type": "signature_delta", "signature": result.signature}})
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    if reply.text or not reply.tool_calls:
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}})
        if index == 0:
            events.append({"type": "ping"})
        for piece in split_chunks(reply.text):
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": piece}})
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    for call in reply.tool_calls:
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})
        if index == 0:
            events.append({"type": "ping"})
        arguments = orjson.dumps(tool_input(call.arguments)).decode()
        for piece in split_chunks(arguments, 12):
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": piece}})
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    final_usage = usage_json(usage, result.output_tokens)
    del final_usage["cache_creation"], final_usage["service_tier"]
    events.append({"type": "message_delta", "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                   "usage": final_usage})
    events.append({"type": "message_stop"})
    return events


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as an object (Anthropic, Bedrock and Gemini carry objects)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
