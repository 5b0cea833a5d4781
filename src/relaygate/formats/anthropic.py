"""Anthropic Messages wire format <-> the common types (both directions)."""

from __future__ import annotations

from typing import Any

import orjson

from relaygate.errors import GatewayError, UpstreamError, invalid
from relaygate.formats.sse import SSEEvent, SSEParser, sse_line
from relaygate.formats.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    Part,
    ReasoningDelta,
    ReasoningPart,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
)

DEFAULT_MAX_TOKENS = 4096
_HANDLED = frozenset(
    {
        "model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
        "stop_sequences", "stream", "tools", "tool_choice", "metadata",
    }
)
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "end_turn",
    "refusal": "refusal",
    "model_context_window_exceeded": "max_tokens",
}
# OpenAI-style error types (our internal vocabulary) -> Anthropic's.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_exceeded": "rate_limit_error",
    "budget_exceeded": "rate_limit_error",
    "request_too_large": "request_too_large",
    "overloaded_error": "overloaded_error",
}


# --- requests ----------------------------------------------------------------------------


def _image(block: dict[str, Any], where: str) -> ImagePart:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "base64":
        return ImagePart(data=source.get("data"), media_type=source.get("media_type"),
                         cache_control=block.get("cache_control"))
    if kind == "url":
        return ImagePart(url=source.get("url"), cache_control=block.get("cache_control"))
    raise invalid(f"{where}.source.type: unsupported image source {kind!r}", where)


def _blocks(content: Any, where: str, role: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise invalid(f"{where}: must be a string or an array of content blocks", where)
    parts: list[Part] = []
    for i, b in enumerate(content):
        here = f"{where}[{i}]"
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            parts.append(TextPart(str(b.get("text", "")), b.get("cache_control")))
        elif kind == "image":
            parts.append(_image(b, here))
        elif kind == "tool_use" and role == "assistant":
            parts.append(ToolCallPart(str(b.get("id", "")), str(b.get("name", "")),
                                      orjson.dumps(b.get("input") or {}).decode()))
        elif kind == "tool_result" and role == "user":
            inner = b.get("content")
            result: list[TextPart | ImagePart] = []
            if isinstance(inner, str):
                result.append(TextPart(inner))
            elif isinstance(inner, list):
                for j, c in enumerate(inner):
                    if c.get("type") == "text":
                        result.append(TextPart(str(c.get("text", ""))))
                    elif c.get("type") == "image":
                        result.append(_image(c, f"{here}.content[{j}]"))
            parts.append(ToolResultPart(str(b.get("tool_use_id", "")), result, bool(b.get("is_error")),
                                        b.get("cache_control")))
        elif kind == "thinking" and role == "assistant":
            parts.append(ReasoningPart(str(b.get("thinking", "")), b.get("signature")))
        elif kind == "redacted_thinking":
            continue
        else:
            raise invalid(f"{here}.type: unsupported content block {kind!r} in a {role} message", here)
    return parts


def parse_request(body: Any) -> ChatRequest:
    """Parses a `/v1/messages` body by Anthropic's rules (`max_tokens` is required)."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid("max_tokens: Field required (a positive integer)", "max_tokens")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("messages: Field required (a non-empty array)", "messages")
    messages: list[Message] = []
    for i, m in enumerate(raw_messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise invalid(f"messages[{i}].role: must be 'user' or 'assistant'", f"messages[{i}].role")
        messages.append(Message(role, _blocks(m.get("content"), f"messages[{i}].content", role)))
    system_raw = body.get("system")
    system: list[TextPart] = []
    if isinstance(system_raw, str):
        system = [TextPart(system_raw)]
    elif isinstance(system_raw, list):
        system = [TextPart(str(b.get("text", "")), b.get("cache_control")) for b in system_raw]
    tools = None
    extra = {k: v for k, v in body.items() if k not in _HANDLED}
    if body.get("tools") is not None:
        tools = []
        for i, t in enumerate(body["tools"]):
            if not isinstance(t, dict) or not t.get("name"):
                raise invalid(f"tools[{i}].name: Field required", f"tools[{i}]")
            if t.get("type") not in (None, "custom"):
                raise invalid(f"tools[{i}]: server tool {t.get('type')!r} is not supported", f"tools[{i}]")
            tools.append(Tool(t["name"], t.get("description"), t.get("input_schema") or {"type": "object"},
                              t.get("cache_control")))
    tool_choice: str | None = None
    parallel = None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        tool_choice = {"auto": "auto", "any": "required", "none": "none"}.get(kind or "", choice.get("name"))
        if choice.get("disable_parallel_tool_use") is not None:
            parallel = not choice["disable_parallel_tool_use"]
    metadata = body.get("metadata") or {}
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        top_k=body.get("top_k"),
        stop=body.get("stop_sequences"),
        stream=bool(body.get("stream")),
        include_usage=True,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        user=metadata.get("user_id") if isinstance(metadata, dict) else None,
        extra=extra,
    )


def _dump_image(p: ImagePart) -> dict[str, Any]:
    if p.data is not None:
        source: dict[str, Any] = {"type": "base64", "media_type": p.media_type or "image/png", "data": p.data}
    else:
        source = {"type": "url", "url": p.url}
    block: dict[str, Any] = {"type": "image", "source": source}
    if p.cache_control:
        block["cache_control"] = p.cache_control
    return block


def _dump_text(p: TextPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": p.text}
    if p.cache_control:
        block["cache_control"] = p.cache_control
    return block


def _dump_part(p: Part) -> dict[str, Any] | None:
    if isinstance(p, TextPart):
        return _dump_text(p) if p.text else None
    if isinstance(p, ImagePart):
        return _dump_image(p)
    if isinstance(p, ToolCallPart):
        try:
            args = orjson.loads(p.arguments) if p.arguments else {}
        except orjson.JSONDecodeError:
            args = {"_raw_arguments": p.arguments}
        return {"type": "tool_use", "id": p.id, "name": p.name, "input": args}
    if isinstance(p, ToolResultPart):
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": p.tool_call_id,
            "content": [_dump_text(c) if isinstance(c, TextPart) else _dump_image(c) for c in p.content],
        }
        if p.is_error:
            block["is_error"] = True
        if p.cache_control:
            block["cache_control"] = p.cache_control
        return block
    if isinstance(p, ReasoningPart):
        # Anthropic only accepts thinking blocks it signed itself.
        return {"type": "thinking", "thinking": p.text, "signature": p.signature} if p.signature else None
    return None


def dump_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """Messages with same-role neighbours merged (Anthropic wants strict alternation)."""
    out: list[dict[str, Any]] = []
    for m in req.messages:
        blocks = [b for b in (_dump_part(p) for p in m.content) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m.role, "content": blocks})
    return out


def dump_request(req: ChatRequest, model: str, *, with_extra: bool = False) -> dict[str, Any]:
    if req.response_format and req.response_format.get("type") not in (None, "text"):
        raise GatewayError(
            400,
            "response_format (JSON mode / JSON schema) is not supported by Anthropic targets; "
            "route this request to an OpenAI or Gemini target",
            "invalid_request_error",
            "unsupported_parameter",
            "response_format",
        )
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": dump_messages(req),
    }
    if with_extra:
        body.update(req.extra)
    if req.system:
        body["system"] = [_dump_text(p) for p in req.system]
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters,
                **({"cache_control": t.cache_control} if t.cache_control else {}),
            }
            for t in req.tools
        ]
    if req.tool_choice is not None or req.parallel_tool_calls is False:
        choice: dict[str, Any]
        if req.tool_choice in (None, "auto"):
            choice = {"type": "auto"}
        elif req.tool_choice == "required":
            choice = {"type": "any"}
        elif req.tool_choice == "none":
            choice = {"type": "none"}
        else:
            choice = {"type": "tool", "name": req.tool_choice}
        if req.parallel_tool_calls is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body


# --- responses ---------------------------------------------------------------------------


def parse_usage(u: dict[str, Any] | None) -> Usage:
    """Anthropic reports cache tokens beside `input_tokens`; ours include them."""
    if not u:
        return Usage()
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0) + read + write,
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def dump_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": max(0, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    }


def parse_response(body: dict[str, Any]) -> ChatResponse:
    content: list[Part] = []
    for b in body.get("content") or []:
        kind = b.get("type")
        if kind == "text":
            content.append(TextPart(b.get("text", "")))
        elif kind == "tool_use":
            content.append(ToolCallPart(b.get("id", ""), b.get("name", ""), orjson.dumps(b.get("input") or {}).decode()))
        elif kind == "thinking":
            content.append(ReasoningPart(b.get("thinking", ""), b.get("signature")))
    stop = body.get("stop_reason")
    return ChatResponse(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        content=content,
        stop_reason=_STOP_REASONS.get(stop, "end_turn") if stop else None,
        usage=parse_usage(body.get("usage")),
        stop_sequence=body.get("stop_sequence"),
    )


def dump_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    for p in resp.content:
        if isinstance(p, ReasoningPart):
            blocks.append({"type": "thinking", "thinking": p.text, "signature": p.signature or ""})
        else:
            block = _dump_part(p)
            if block is not None:
                blocks.append(block)
    return {
        "id": resp.id if resp.id.startswith("msg_") else f"msg_{resp.id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": resp.stop_reason if resp.stop_reason != "content_filter" else "refusal",
        "stop_sequence": resp.stop_sequence,
        "usage": dump_usage(resp.usage),
    }


# --- streams -----------------------------------------------------------------------------


class StreamDecoder:
    """Anthropic SSE bytes -> stream events."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._tool_of_block: dict[int, int] = {}
        self._usage = Usage()
        self._stop: StopReason | None = None
        self._stop_seq: str | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._sse.feed(chunk):
            self._handle(ev.event, ev.data, out)
        return out

    def feed_event(self, data: dict[str, Any]) -> list[StreamEvent]:
        """One already-decoded event (Bedrock wraps Anthropic events in its own framing)."""
        out: list[StreamEvent] = []
        self._dispatch(data, out)
        return out

    def close(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._sse.close():
            self._handle(ev.event, ev.data, out)
        if not self.done:
            raise UpstreamError(502, "upstream stream ended before message_stop")
        return out

    def _handle(self, event: str | None, data: str, out: list[StreamEvent]) -> None:
        if self.done or not data:
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(502, "upstream sent a malformed stream event") from exc
        self._dispatch(payload, out)

    def _dispatch(self, d: dict[str, Any], out: list[StreamEvent]) -> None:
        kind = d.get("type")
        if kind == "message_start":
            msg = d.get("message") or {}
            self._usage = parse_usage(msg.get("usage"))
            out.append(StreamStart(str(msg.get("id", "")), str(msg.get("model", "")), self._usage))
        elif kind == "content_block_start":
            block = d.get("content_block") or {}
            if block.get("type") == "tool_use":
                tool_index = len(self._tool_of_block)
                self._tool_of_block[int(d.get("index", 0))] = tool_index
                out.append(ToolCallStart(tool_index, str(block.get("id", "")), str(block.get("name", ""))))
            elif block.get("type") == "text" and block.get("text"):
                out.append(TextDelta(block["text"]))
        elif kind == "content_block_delta":
            delta = d.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                out.append(TextDelta(delta.get("text", "")))
            elif dtype == "input_json_delta":
                tool_index = self._tool_of_block.get(int(d.get("index", 0)), 0)
                if delta.get("partial_json"):
                    out.append(ToolCallDelta(tool_index, delta["partial_json"]))
            elif dtype == "thinking_delta":
                out.append(ReasoningDelta(delta.get("thinking", "")))
            elif dtype == "signature_delta":
                out.append(ReasoningDelta("", delta.get("signature")))
        elif kind == "message_delta":
            delta = d.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = _STOP_REASONS.get(delta["stop_reason"], "end_turn")
                self._stop_seq = delta.get("stop_sequence")
            usage = d.get("usage") or {}
            if usage:
                update = parse_usage(usage)
                self._usage = Usage(
                    input_tokens=update.input_tokens if usage.get("input_tokens") is not None else self._usage.input_tokens,
                    output_tokens=update.output_tokens or self._usage.output_tokens,
                    cache_read_tokens=update.cache_read_tokens or self._usage.cache_read_tokens,
                    cache_write_tokens=update.cache_write_tokens or self._usage.cache_write_tokens,
                )
        elif kind == "message_stop":
            self.done = True
            out.append(StreamEnd(self._stop, self._usage, self._stop_seq))
        elif kind == "error":
            err = d.get("error") or {}
            status = 529 if err.get("type") == "overloaded_error" else 502
            raise UpstreamError(status, str(err.get("message", "upstream stream error")), error_type=err.get("type"))


class StreamPassthrough(StreamDecoder):
    """An Anthropic stream relayed to an Anthropic client whose request went upstream
    unchanged: decoded for usage, the end and what the cache and the ledger keep, while the
    client gets the upstream's own events (`take`), less `message_stop`, which the relay
    sends after its cost comment. An error event is raised, as by the decoder, and the relay
    answers it in its own words."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: list[bytes] = []

    def take(self) -> bytes:
        """The client's bytes for the events decoded since the last call."""
        kept, self._kept = self._kept, []
        return b"".join(kept)

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        return self._relay(self._sse.feed(chunk))

    def close(self) -> list[StreamEvent]:
        out = self._relay(self._sse.close())
        if not self.done:
            raise UpstreamError(502, "upstream stream ended before message_stop")
        return out

    def _relay(self, events: list[SSEEvent]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in events:
            self._handle(ev.event, ev.data, out)
            if self.done:
                break
            if ev.data:  # a data of several lines goes out as several `data:` lines
                self._kept.append(sse_line(ev.data.encode().replace(b"\n", b"\ndata: "), ev.event))
        return out


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return sse_line(orjson.dumps(payload), name)


MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})  # a stream's last bytes


class StreamEncoder:
    """Stream events -> Anthropic SSE bytes for a client (blocks opened and closed in order)."""

    def __init__(self, model: str, request_id: str) -> None:
        self.model = model
        self.id = f"msg_{request_id}"
        self._index = -1
        self._open: str | None = None  # "text" | "thinking" | "tool"
        self._tool_blocks: dict[int, int] = {}
        self._usage = Usage()

    def _start_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._stop_block()
        self._index += 1
        self._open = kind
        return out + _event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                    "content_block": block})

    def _stop_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def encode(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            out = b"" if self._open == "text" else self._start_block("text", {"type": "text", "text": ""})
            return out + _event("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                        "delta": {"type": "text_delta", "text": ev.text}})
        if isinstance(ev, ToolCallDelta):
            index = self._tool_blocks.get(ev.index, self._index)
            return _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "input_json_delta", "partial_json": ev.arguments}})
        if isinstance(ev, ToolCallStart):
            out = self._start_block("tool", {"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}})
            self._tool_blocks[ev.index] = self._index
            return out
        if isinstance(ev, ReasoningDelta):
            out = b"" if self._open == "thinking" else self._start_block(
                "thinking", {"type": "thinking", "thinking": "", "signature": ""})
            if ev.signature:
                return out + _event("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                            "delta": {"type": "signature_delta", "signature": ev.signature}})
            return out + _event("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                        "delta": {"type": "thinking_delta", "thinking": ev.text}})
        if isinstance(ev, StreamStart):
            if ev.usage:
                self._usage = ev.usage
            message: dict[str, Any] = {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": dump_usage(self._usage),
            }
            return _event("message_start", {"type": "message_start", "message": message})
        if isinstance(ev, StreamEnd):
            usage = ev.usage or self._usage
            stop = ev.stop_reason if ev.stop_reason != "content_filter" else "refusal"
            return self._stop_block() + _event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": stop or "end_turn", "stop_sequence": ev.stop_sequence},
                "usage": dump_usage(usage),
            })
        return b""

    @staticmethod
    def close() -> bytes:
        """A successful stream's last bytes (the same for every stream: no state needed)."""
        return MESSAGE_STOP

    def error(self, err: GatewayError) -> bytes:
        return _event("error", error_envelope_dict(err))


def error_envelope_dict(err: GatewayError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(err.type, "api_error")
    if err.status == 529:
        kind = "overloaded_error"
    body: dict[str, Any] = {"type": kind, "message": err.message}
    body.update(err.extra)
    return {"type": "error", "error": body}


def error_envelope(err: GatewayError) -> bytes:
    return orjson.dumps(error_envelope_dict(err))
