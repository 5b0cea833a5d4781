"""Gemini `generateContent` bodies <-> the common types (AI Studio and Vertex AI share them).

- Gemini has no tool-call ids: each `functionCall` gets a stable synthetic id derived from
  the response id and its position (or Gemini's own `id` when it sends one), and a tool
  result is sent back as a `functionResponse` named after the call it answers, found by id
  in the conversation.
- Usage: `promptTokenCount` already includes `cachedContentTokenCount` (our convention);
  `thoughtsTokenCount` is reasoning, billed as output, so output = candidates + thoughts.
- Safety blocks (`finishReason` SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII,
  IMAGE_SAFETY, or `promptFeedback.blockReason`) end with stop reason `content_filter` and,
  when nothing was generated, a text saying what Gemini blocked and why.
- Thought signatures are not kept between turns (see `SKIP_SIGNATURE`).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import orjson

from relaygate.errors import GatewayError, UpstreamError
from relaygate.formats.sse import SSEParser
from relaygate.formats.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Part,
    ReasoningDelta,
    ReasoningPart,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
)
from relaygate.providers.base import json_object
from relaygate.providers.gemini.schema import gemini_schema

BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                     "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})
FINISH: dict[str, StopReason] = {"STOP": "end_turn", "MAX_TOKENS": "max_tokens"}
# Gemini 3 rejects replayed function calls without the thought signature it issued. The
# common types cannot carry signatures between turns, so replayed calls get Google's
# documented sentinel (the model then lacks its earlier reasoning, but the call validates).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_SIGNATURE_REQUIRED = re.compile(r"(^|/)gemini-3")


def _unsupported(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "unsupported_parameter", param)


# --- requests ----------------------------------------------------------------------------


def _args(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _image(p: ImagePart) -> dict[str, Any]:
    if p.data is None:
        raise _unsupported("Gemini targets take images inline only: send a data: URL (base64) instead of "
                           f"the image URL {(p.url or '')[:80]!r}", "messages")
    return {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}


def _tool_response(p: ToolResultPart, name: str) -> dict[str, Any]:
    text = "".join(c.text for c in p.content if isinstance(c, TextPart))
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response: dict[str, Any] = parsed if isinstance(parsed, dict) else {"content": text}
    if p.is_error:
        response = {"error": response}
    return {"functionResponse": {"name": name, "response": response}}


def dump_contents(req: ChatRequest, model: str = "") -> list[dict[str, Any]]:
    names = {p.id: p.name for m in req.messages for p in m.content if isinstance(p, ToolCallPart)}
    needs_signature = bool(_SIGNATURE_REQUIRED.search(model))
    out: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if isinstance(p, TextPart):
                if p.text:
                    parts.append({"text": p.text})
            elif isinstance(p, ImagePart):
                parts.append(_image(p))
            elif isinstance(p, ToolCallPart):
                parts.append({"functionCall": {"name": p.name, "args": _args(p.arguments)}})
            elif isinstance(p, ToolResultPart):
                name = names.get(p.tool_call_id)
                if name is None:
                    raise GatewayError(400, f"messages[{i}]: tool result for unknown tool call id "
                                       f"{p.tool_call_id!r}; Gemini matches results to calls by function name, "
                                       "so the assistant message with that call must be in the history",
                                       "invalid_request_error", "invalid_request", "messages")
                parts.append(_tool_response(p, name))
                # Images a tool returned follow its response as inline parts of the same turn.
                parts.extend(_image(c) for c in p.content if isinstance(c, ImagePart))
            # ReasoningPart: Gemini's thoughts cannot be sent back; dropped.
        if not parts:
            continue
        role = "model" if m.role == "assistant" else "user"
        if needs_signature and role == "model":
            first_call = next((p for p in parts if "functionCall" in p), None)
            if first_call is not None:
                first_call["thoughtSignature"] = SKIP_SIGNATURE
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _response_format(fmt: dict[str, Any] | None, config: dict[str, Any]) -> None:
    kind = (fmt or {}).get("type")
    if kind in (None, "text"):
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = (fmt or {}).get("json_schema") or {}
        schema = spec.get("schema")
        config["responseMimeType"] = "application/json"
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema, "response_format")
        return
    raise _unsupported(f"response_format type {kind!r} is not supported by Gemini targets", "response_format")


def dump_request(req: ChatRequest, model: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"contents": dump_contents(req, model)}
    if any(p.text for p in req.system):
        body["systemInstruction"] = {"parts": [{"text": p.text} for p in req.system if p.text]}
    config: dict[str, Any] = {}
    if req.max_tokens is not None:
        config["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["topP"] = req.top_p
    if req.top_k is not None:
        config["topK"] = req.top_k
    if req.stop:
        config["stopSequences"] = req.stop[:5]
    _response_format(req.response_format, config)
    if config:
        body["generationConfig"] = config
    if req.tools:
        declarations = []
        for t in req.tools:
            decl: dict[str, Any] = {"name": t.name}
            if t.description:
                decl["description"] = t.description
            if (t.parameters or {}).get("properties"):
                decl["parameters"] = gemini_schema(t.parameters, f"tools[{t.name}].parameters")
            declarations.append(decl)
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = req.tool_choice
        if choice is not None:
            mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice)
            calling: dict[str, Any] = {"mode": mode or "ANY"}
            if mode is None:
                calling["allowedFunctionNames"] = [choice]
            body["toolConfig"] = {"functionCallingConfig": calling}
    return body


# --- responses ---------------------------------------------------------------------------


def parse_usage(u: dict[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(u.get("promptTokenCount") or 0) + int(u.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def tool_call_id(response_id: str, index: int, given: Any = None) -> str:
    """Gemini's own id when it sends one, else one derived from the response and position."""
    if isinstance(given, str) and given:
        return given
    return "call_" + hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:24]


def block_message(data: dict[str, Any], candidate: dict[str, Any] | None) -> str:
    feedback = data.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        reason = feedback["blockReason"]
        ratings = feedback.get("safetyRatings") or []
        where = "the prompt"
    else:
        reason = (candidate or {}).get("finishReason", "SAFETY")
        ratings = (candidate or {}).get("safetyRatings") or []
        where = "the response"
    flagged = [str(r.get("category", "")) for r in ratings if isinstance(r, dict) and r.get("blocked")]
    detail = f" ({', '.join(flagged)})" if flagged else ""
    extra = feedback.get("blockReasonMessage") or (candidate or {}).get("finishMessage")
    return f"[Gemini blocked {where}: {reason}{detail}{'. ' + str(extra) if extra else ''}]"


def _finish(raw: str | None, has_calls: bool) -> StopReason | None:
    if not raw:
        return None
    if raw in BLOCKED:
        return "content_filter"
    stop = FINISH.get(raw, "end_turn")
    return "tool_use" if has_calls and stop == "end_turn" else stop


def new_response_id() -> str:
    return "gemini-" + os.urandom(12).hex()


def parse_response(data: dict[str, Any]) -> ChatResponse:
    rid = str(data.get("responseId") or new_response_id())
    candidates = data.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else None
    content: list[Part] = []
    calls = 0
    for part in ((candidate or {}).get("content") or {}).get("parts") or []:
        if not isinstance(part, dict):
            continue
        if "functionCall" in part:
            fc = part["functionCall"] or {}
            content.append(ToolCallPart(tool_call_id(rid, calls, fc.get("id")), str(fc.get("name", "")),
                                        orjson.dumps(fc.get("args") or {}).decode()))
            calls += 1
        elif "text" in part:
            if part.get("thought"):
                content.append(ReasoningPart(str(part["text"])))
            else:
                content.append(TextPart(str(part["text"])))
    prompt_blocked = bool((data.get("promptFeedback") or {}).get("blockReason"))
    if candidate is None and not prompt_blocked:
        raise UpstreamError(502, "Gemini answered without candidates")
    stop = "content_filter" if prompt_blocked else _finish((candidate or {}).get("finishReason"), calls > 0)
    if stop == "content_filter" and not any(isinstance(p, (TextPart, ToolCallPart)) for p in content):
        content.append(TextPart(block_message(data, candidate)))
    content.sort(key=lambda p: 0 if isinstance(p, ReasoningPart) else 1)
    return ChatResponse(id=rid, model=str(data.get("modelVersion", "")), content=content,
                        stop_reason=stop or "end_turn", usage=parse_usage(data.get("usageMetadata")))


# --- streams -----------------------------------------------------------------------------


class StreamDecoder:
    """`streamGenerateContent?alt=sse` bytes -> stream events. Each event is a whole
    GenerateContentResponse; the stream has no terminator, so the end is the finishReason
    followed by the end of the body."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._sse = SSEParser()
        self._rid = ""
        self._started = False
        self._calls = 0
        self._text_seen = False
        self._stop: StopReason | None = None
        self._usage: Usage | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._sse.feed(chunk):
            self._handle(ev.data, out)
        return out

    def close(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._sse.close():
            self._handle(ev.data, out)
        if self.done:
            return out
        if self._stop is None:
            raise UpstreamError(502, f"{self.provider}: stream ended before a finishReason")
        self.done = True
        out.append(StreamEnd(self._stop, self._usage))
        return out

    def _handle(self, data: str, out: list[StreamEvent]) -> None:
        if self.done or not data.strip():
            return
        chunk = json_object(data, self.provider, "malformed stream chunk", "malformed stream chunk")
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {}
            code = int(err.get("code") or 502)
            raise UpstreamError(code if code in (429, 500, 503, 504) else 502,
                                f"{self.provider}: {err.get('message', 'stream error')}", error_type=err.get("status"))
        if not self._started:
            self._started = True
            self._rid = str(chunk.get("responseId") or new_response_id())
            out.append(StreamStart(self._rid, str(chunk.get("modelVersion", ""))))
        if chunk.get("usageMetadata"):
            self._usage = parse_usage(chunk["usageMetadata"])
        candidates = chunk.get("candidates") or []
        candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else None
        for part in ((candidate or {}).get("content") or {}).get("parts") or []:
            if not isinstance(part, dict):
                continue
            if "functionCall" in part:
                fc = part["functionCall"] or {}
                index = self._calls
                self._calls += 1
                out.append(ToolCallStart(index, tool_call_id(self._rid, index, fc.get("id")), str(fc.get("name", ""))))
                out.append(ToolCallDelta(index, orjson.dumps(fc.get("args") or {}).decode()))
            elif part.get("text"):
                if part.get("thought"):
                    out.append(ReasoningDelta(str(part["text"])))
                else:
                    self._text_seen = True
                    out.append(TextDelta(str(part["text"])))
        prompt_blocked = bool((chunk.get("promptFeedback") or {}).get("blockReason"))
        reason = (candidate or {}).get("finishReason")
        if prompt_blocked or reason:
            stop = "content_filter" if prompt_blocked else _finish(reason, self._calls > 0)
            if stop == "content_filter" and not self._text_seen and not self._calls:
                out.append(TextDelta(block_message(chunk, candidate)))
            self._stop = stop
