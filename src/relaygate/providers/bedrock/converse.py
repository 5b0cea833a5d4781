"""Bedrock Converse / ConverseStream bodies <-> the common types.

Usage rule: Converse's `inputTokens` EXCLUDES prompt-cache reads and writes, which it
reports beside it as `cacheReadInputTokens` / `cacheWriteInputTokens` (`totalTokens` =
input + output + both cache counts; AWS API reference `TokenUsage`, and Bedrock's prompt
caching guide). Our `Usage.input_tokens` is the whole prompt, so
`input_tokens = inputTokens + cacheReadInputTokens + cacheWriteInputTokens`.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from relaygate.errors import GatewayError
from relaygate.formats.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Part,
    ReasoningPart,
    StopReason,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)

STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "model_context_window_exceeded": "max_tokens",
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_CACHE_POINT = {"cachePoint": {"type": "default"}}


def unsupported(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "unsupported_parameter", param)


def _image(p: ImagePart) -> dict[str, Any]:
    if p.data is None:
        raise unsupported("Bedrock cannot fetch image URLs: send images inline as base64 data: URLs "
                          "(or an Anthropic base64 image source)", "messages")
    media = (p.media_type or "image/png").lower()
    fmt = _IMAGE_FORMATS.get(media)
    if fmt is None:
        raise unsupported(f"Bedrock accepts png, jpeg, gif and webp images, not {media!r}", "messages")
    return {"image": {"format": fmt, "source": {"bytes": p.data}}}


def _tool_input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _blocks(part: Part) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cache = False
    if isinstance(part, TextPart):
        if part.text:
            out.append({"text": part.text})
        cache = part.cache_control is not None
    elif isinstance(part, ImagePart):
        out.append(_image(part))
        cache = part.cache_control is not None
    elif isinstance(part, ToolCallPart):
        out.append({"toolUse": {"toolUseId": part.id, "name": part.name, "input": _tool_input(part.arguments)}})
    elif isinstance(part, ToolResultPart):
        content = [{"text": c.text} if isinstance(c, TextPart) else _image(c) for c in part.content]
        result: dict[str, Any] = {"toolUseId": part.tool_call_id, "content": content or [{"text": ""}]}
        if part.is_error:
            result["status"] = "error"
        out.append({"toolResult": result})
        cache = part.cache_control is not None
    elif isinstance(part, ReasoningPart) and part.signature:
        # Bedrock, like Anthropic, accepts back only reasoning it signed.
        out.append({"reasoningContent": {"reasoningText": {"text": part.text, "signature": part.signature}}})
    if cache and out:
        out.append(dict(_CACHE_POINT))
    return out


def dump_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """Converse messages; same-role neighbours merged (Converse wants alternation)."""
    out: list[dict[str, Any]] = []
    for m in req.messages:
        blocks = [b for p in m.content for b in _blocks(p)]
        if not blocks:
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m.role, "content": blocks})
    return out


def _tool_config(req: ChatRequest) -> dict[str, Any] | None:
    specs = [
        {"toolSpec": {"name": t.name, **({"description": t.description} if t.description else {}),
                      "inputSchema": {"json": t.parameters}}}
        for t in req.tools or []
    ]
    # Converse refuses toolUse/toolResult blocks in the history without a toolConfig: name
    # the tools the history used when the client sent none (e.g. tool_choice none).
    used = {p.name for m in req.messages for p in m.content if isinstance(p, ToolCallPart)}
    declared = {t.name for t in req.tools or []}
    specs += [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in sorted(used - declared)]
    if not specs:
        return None
    config: dict[str, Any] = {"tools": specs}
    choice = req.tool_choice
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice not in (None, "auto", "none"):
        config["toolChoice"] = {"tool": {"name": choice}}
    # "auto" is Converse's default; naming it is refused by models without toolChoice.
    return config


def dump_request(req: ChatRequest, model_id: str) -> dict[str, Any]:
    if req.response_format and req.response_format.get("type") not in (None, "text"):
        raise unsupported("response_format (JSON mode / JSON schema) is not supported by Bedrock Converse "
                          "targets; route this request to an OpenAI, Azure OpenAI or Gemini target",
                          "response_format")
    body: dict[str, Any] = {"messages": dump_messages(req)}
    if req.system:
        system: list[dict[str, Any]] = []
        for p in req.system:
            system.append({"text": p.text})
            if p.cache_control:
                system.append(dict(_CACHE_POINT))
        body["system"] = system
    inference: dict[str, Any] = {}
    if req.max_tokens is not None:
        inference["maxTokens"] = req.max_tokens
    if req.temperature is not None:
        inference["temperature"] = min(req.temperature, 1.0) if "anthropic" in model_id else req.temperature
    if req.top_p is not None:
        inference["topP"] = req.top_p
    if req.stop:
        inference["stopSequences"] = req.stop
    if inference:
        body["inferenceConfig"] = inference
    extra: dict[str, Any] = {}
    if req.top_k is not None and "anthropic" in model_id:
        extra["top_k"] = req.top_k
    if "anthropic" in model_id and isinstance(req.extra.get("thinking"), dict):
        extra["thinking"] = req.extra["thinking"]  # Claude's extended thinking, as sent by the client
    if extra:
        body["additionalModelRequestFields"] = extra
    tool_config = _tool_config(req)
    if tool_config is not None and not (req.tool_choice == "none" and not _history_uses_tools(req)):
        body["toolConfig"] = tool_config
    return body


def _history_uses_tools(req: ChatRequest) -> bool:
    return any(isinstance(p, (ToolCallPart, ToolResultPart)) for m in req.messages for p in m.content)


def parse_usage(u: dict[str, Any] | None) -> Usage:
    """Converse usage -> ours: cache reads and writes are added into `input_tokens`."""
    if not u:
        return Usage()
    read = int(u.get("cacheReadInputTokens") or 0)
    write = int(u.get("cacheWriteInputTokens") or 0)
    return Usage(
        input_tokens=int(u.get("inputTokens") or 0) + read + write,
        output_tokens=int(u.get("outputTokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def stop_reason(raw: str | None) -> StopReason | None:
    return STOP_REASONS.get(raw, "end_turn") if raw else None


def response_id() -> str:
    """Converse answers carry no message id (only the x-amzn-RequestId header)."""
    return "bedrock-" + os.urandom(12).hex()


def parse_response(data: dict[str, Any]) -> ChatResponse:
    message = (data.get("output") or {}).get("message") or {}
    content: list[Part] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if "text" in block:
            content.append(TextPart(str(block["text"])))
        elif "toolUse" in block:
            use = block["toolUse"] or {}
            content.append(ToolCallPart(str(use.get("toolUseId", "")), str(use.get("name", "")),
                                        orjson.dumps(use.get("input") or {}).decode()))
        elif "reasoningContent" in block:
            text = (block["reasoningContent"] or {}).get("reasoningText") or {}
            content.append(ReasoningPart(str(text.get("text", "")), text.get("signature")))
    # Reasoning first, as the common types and both client formats expect.
    content.sort(key=lambda p: 0 if isinstance(p, ReasoningPart) else 1)
    return ChatResponse(
        id=response_id(),
        model="",
        content=content,
        stop_reason=stop_reason(data.get("stopReason")),
        usage=parse_usage(data.get("usage")),
    )
