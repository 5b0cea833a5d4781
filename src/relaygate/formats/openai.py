"""OpenAI Chat Completions wire format <-> the common types (both directions)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from relaygate.errors import GatewayError, UpstreamError, invalid
from relaygate.formats.sse import SSEParser, sse_line
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

_HANDLED = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "stop", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
        "response_format", "user", "functions", "function_call",
    }
)
FINISH_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}


# --- requests ----------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid(f"{where}[{i}]: only text parts are allowed here", where)
            out.append(str(part.get("text", "")))
        return "".join(out)
    raise invalid(f"{where}: must be a string or an array of parts", where)


def _image_from_url(url: str, detail: str | None) -> ImagePart:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "image/png"
        return ImagePart(data=data, media_type=media_type, detail=detail)
    return ImagePart(url=url, detail=detail)


def _user_parts(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise invalid(f"{where}: must be a string or an array of content parts", where)
    parts: list[Part] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(TextPart(str(part.get("text", ""))))
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid(f"{where}[{i}].image_url.url is required", where)
            parts.append(_image_from_url(url, image.get("detail") if isinstance(image, dict) else None))
        else:
            raise invalid(f"{where}[{i}]: unsupported content part type {kind!r}", where)
    return parts


def parse_request(body: Any) -> ChatRequest:
    """Parses a `/v1/chat/completions` body; raises a 400 `GatewayError` naming the field."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required", "model")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("'messages' must be a non-empty array", "messages")
    system: list[TextPart] = []
    messages: list[Message] = []
    for i, m in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(f"{where}: must be an object", where)
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(TextPart(_text_of(m.get("content"), f"{where}.content")))
        elif role == "user":
            messages.append(Message("user", _user_parts(m.get("content"), f"{where}.content")))
        elif role == "assistant":
            parts: list[Part] = []
            text = _text_of(m.get("content"), f"{where}.content") if m.get("content") is not None else ""
            if text:
                parts.append(TextPart(text))
            for j, call in enumerate(m.get("tool_calls") or []):
                fn = call.get("function") or {}
                if not fn.get("name"):
                    raise invalid(f"{where}.tool_calls[{j}].function.name is required", where)
                parts.append(ToolCallPart(str(call.get("id", "")), fn["name"], fn.get("arguments") or "{}"))
            messages.append(Message("assistant", parts))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise invalid(f"{where}.tool_call_id is required", f"{where}.tool_call_id")
            content = m.get("content")
            result_parts: list[TextPart | ImagePart] = (
                [TextPart(content)] if isinstance(content, str)
                else [p for p in _user_parts(content or [], f"{where}.content")
                      if isinstance(p, (TextPart, ImagePart))]
            )
            result = ToolResultPart(call_id, result_parts)
            last = messages[-1] if messages else None
            if last and last.role == "user" and all(isinstance(p, ToolResultPart) for p in last.content):
                last.content.append(result)
            else:
                messages.append(Message("user", [result]))
        else:
            raise invalid(f"{where}.role: unsupported role {role!r}", f"{where}.role")
    if not messages:
        raise invalid("'messages' needs at least one user or assistant message", "messages")

    tools = None
    if body.get("tools") is not None:
        if not isinstance(body["tools"], list):
            raise invalid("'tools' must be an array", "tools")
        tools = []
        for i, t in enumerate(body["tools"]):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not fn.get("name"):
                raise invalid(f"tools[{i}].function.name is required", f"tools[{i}]")
            tools.append(Tool(fn["name"], fn.get("description"), fn.get("parameters") or {"type": "object"}))
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict):
        tool_choice = (tool_choice.get("function") or {}).get("name")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise invalid("'max_tokens' must be a positive integer", "max_tokens")
    stream_options = body.get("stream_options") or {}
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=stop,
        stream=bool(body.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.get("parallel_tool_calls"),
        response_format=body.get("response_format"),
        user=body.get("user"),
        extra={k: v for k, v in body.items() if k not in _HANDLED},
    )


def _dump_user_content(parts: list[Any]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
            image: dict[str, Any] = {"url": url}
            if p.detail:
                image["detail"] = p.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def dump_messages(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": "\n\n".join(p.text for p in req.system)})
    for m in req.messages:
        if m.role == "assistant":
            text = "".join(p.text for p in m.content if isinstance(p, TextPart))
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
                for p in m.content
                if isinstance(p, ToolCallPart)
            ]
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
            continue
        rest: list[Any] = []
        for p in m.content:
            if isinstance(p, ToolResultPart):
                text = "".join(c.text for c in p.content if isinstance(c, TextPart))
                out.append({"role": "tool", "tool_call_id": p.tool_call_id, "content": text})
            elif isinstance(p, (TextPart, ImagePart)):
                rest.append(p)
        if rest:
            out.append({"role": "user", "content": _dump_user_content(rest)})
    return out


def dump_request(
    req: ChatRequest, model: str, *, max_tokens_field: str = "max_tokens", with_extra: bool = False
) -> dict[str, Any]:
    """The request body for an OpenAI-format upstream. Streams always ask for usage."""
    body: dict[str, Any] = {"model": model, "messages": dump_messages(req)}
    if with_extra:
        body.update(req.extra)
    if req.max_tokens is not None:
        body[max_tokens_field] = req.max_tokens
    for name in ("temperature", "top_p", "stop", "response_format", "user", "parallel_tool_calls"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        body["tool_choice"] = (
            req.tool_choice
            if req.tool_choice in ("auto", "none", "required")
            else {"type": "function", "function": {"name": req.tool_choice}}
        )
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# --- responses ---------------------------------------------------------------------------


def parse_usage(u: dict[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("prompt_tokens") or 0),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def dump_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def parse_response(body: dict[str, Any]) -> ChatResponse:
    choices = body.get("choices") or []
    if not choices:
        raise UpstreamError(502, "upstream answer has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[Part] = []
    reasoning = message.get("reasoning_content")
    if reasoning:
        content.append(ReasoningPart(reasoning))
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append(TextPart(text))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(ToolCallPart(call.get("id", ""), fn.get("name", ""), fn.get("arguments") or ""))
    finish = choice.get("finish_reason")
    return ChatResponse(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        content=content,
        stop_reason=FINISH_TO_STOP.get(finish or "", "end_turn") if finish else None,
        usage=parse_usage(body.get("usage")),
        created=int(body.get("created") or time.time()),
    )


def dump_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    calls = resp.tool_calls
    message: dict[str, Any] = {"role": "assistant", "content": resp.text or None, "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return {
        "id": resp.id if resp.id.startswith("chatcmpl") else f"chatcmpl-{resp.id}",
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_TO_FINISH.get(resp.stop_reason or "end_turn", "stop"),
                "logprobs": None,
            }
        ],
        "usage": dump_usage(resp.usage),
    }


# --- streams -----------------------------------------------------------------------------


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct, gc=False):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    """The fields of a `chat.completion.chunk` the gateway reads; the rest is skipped
    while parsing, never built (the client gets the upstream's own bytes anyway)."""

    id: Any = None
    model: Any = None
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = msgspec.UNSET  # present, even as null, on an error chunk


# Typed decoding builds only what the decoders read: a 20-chunk read parses in half the
# time orjson takes to build every dict, and the benchmark stream's whole pass-through
# decode takes 0.74x (bench/results/decode-2026-12-03-msgspec.txt). `strict=False` keeps
# what the dict-based decoder tolerated ("index": "0").
_CHUNK = msgspec.json.Decoder(_Chunk, strict=False)
_CHUNKS = msgspec.json.Decoder(list[_Chunk], strict=False)
_UNPARSED: Any = object()  # `_chunk`: the payload is still to be parsed


def _parse_all(payloads: list[bytes]) -> Sequence[_Chunk | None] | None:
    """The chunks of one read's payloads in one call (a trailing `[DONE]` kept as None)
    instead of one call per chunk. None when they do not parse as exactly one chunk each:
    each is then parsed alone, for its error."""
    if len(payloads) < 2:
        return None
    last = payloads[-1]
    done = last[:1] != b"{" and last.strip() == b"[DONE]"
    body = payloads[:-1] if done else payloads
    try:
        parsed = _CHUNKS.decode(b"[" + b",".join(body) + b"]")
    except msgspec.DecodeError:
        return None
    if len(parsed) != len(body):
        return None
    return [*parsed, None] if done else parsed


class StreamDecoder:
    """OpenAI SSE bytes -> stream events. Holds the end back until `[DONE]` (usage comes
    after the finish reason)."""

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._started = False
        self._stop: StopReason | None = None
        self._finished = False
        self._usage: Usage | None = None
        self._tool_ids: set[int] = set()
        self.done = False

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for data in self._sse.feed_data(chunk):
            self._handle(data, out)
        return out

    def close(self) -> list[StreamEvent]:
        """At end of body: the end event, or an error if the stream was cut short."""
        out: list[StreamEvent] = []
        for ev in self._sse.close():
            if ev.data:
                self._handle(ev.data.encode(), out)
        if not self.done:
            if self._finished:
                self.done = True
                out.append(StreamEnd(self._stop, self._usage))
            else:
                raise UpstreamError(502, "upstream stream ended before it finished")
        return out

    def _handle(self, data: bytes, out: list[StreamEvent]) -> None:
        if self.done:
            return
        if data[:1] != b"{" and data.strip() == b"[DONE]":
            self.done = True
            out.append(StreamEnd(self._stop, self._usage))
            return
        chunk = self._chunk(data, out)
        if chunk.usage:
            self._usage = parse_usage(chunk.usage)
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                if delta.tool_calls is None and delta.reasoning_content is None:  # text only
                    if delta.content:
                        out.append(TextDelta(delta.content))
                else:
                    self._delta(delta, out)
            if choice.finish_reason:
                self._finished = True
                self._stop = FINISH_TO_STOP.get(choice.finish_reason, "end_turn")

    def _chunk(self, data: bytes, out: list[StreamEvent], chunk: Any = _UNPARSED) -> _Chunk:
        """One chunk (`chunk`: already parsed by `_parse_all`); an error chunk is raised,
        the first one starts the stream."""
        if chunk is _UNPARSED:
            try:
                chunk = _CHUNK.decode(data)
            except msgspec.DecodeError as exc:
                raise UpstreamError(502, f"upstream sent a malformed stream chunk: {exc}") from exc
        if chunk.error is not msgspec.UNSET:
            err = chunk.error
            if isinstance(err, dict):
                raise UpstreamError(502, str(err.get("message") or "upstream stream error"),
                                    error_type=err.get("type"))
            raise UpstreamError(502, str(err or "upstream stream error"))
        if not self._started:
            self._started = True
            out.append(StreamStart(str(chunk.id or ""), str(chunk.model or "")))
        return chunk  # type: ignore[no-any-return]

    def _delta(self, delta: _Delta, out: list[StreamEvent]) -> None:
        if delta.reasoning_content:
            out.append(ReasoningDelta(delta.reasoning_content))
        if delta.content:
            out.append(TextDelta(delta.content))
        for call in delta.tool_calls or ():
            fn = call.function or _NO_FUNCTION
            if call.index not in self._tool_ids:
                self._tool_ids.add(call.index)
                out.append(ToolCallStart(call.index, call.id or f"call_{call.index}", fn.name or ""))
            if fn.arguments:
                out.append(ToolCallDelta(call.index, fn.arguments))


_NO_FUNCTION = _Function()


class StreamPassthrough(StreamDecoder):
    """An OpenAI stream relayed to an OpenAI client whose request went upstream unchanged:
    the events are still decoded (usage, the end, what the cache and the ledger keep), but
    the client gets the upstream's own event data (`take`) instead of re-encoded chunks, as
    a non-streaming answer gets the upstream's body. Held back: `[DONE]`, which the relay
    sends after its cost comment, and the usage-only chunk when the client did not ask for
    usage (the gateway always does). The text-only deltas of one read come out as one
    `TextDelta`: nothing is encoded from them, only collected."""

    def __init__(self, include_usage: bool) -> None:
        super().__init__()
        self.include_usage = include_usage
        self._kept: list[bytes] = []

    def take(self) -> bytes:
        """The client's bytes for the events decoded since the last call."""
        if not self._kept:
            return b""
        kept, self._kept = self._kept, []
        return b"data: " + b"\n\ndata: ".join(kept) + b"\n\n"

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        return self._decode(self._sse.feed_data(chunk))

    def close(self) -> list[StreamEvent]:
        out = self._decode([ev.data.encode() for ev in self._sse.close() if ev.data])
        if not self.done:
            if not self._finished:
                raise UpstreamError(502, "upstream stream ended before it finished")
            self.done = True
            out.append(StreamEnd(self._stop, self._usage))
        return out

    def _decode(self, payloads: list[bytes]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        text: list[str] = []
        parsed = _parse_all(payloads)
        for i, data in enumerate(payloads):
            if self.done:
                break
            if data[:1] != b"{" and data.strip() == b"[DONE]":
                self.done = True
                if text:
                    out.append(TextDelta("".join(text)))
                    text = []
                out.append(StreamEnd(self._stop, self._usage))
                break
            if parsed is None:
                chunk = self._chunk(data, out)
            else:  # the checks of `_chunk`, inline: this loop runs once per token
                chunk = parsed[i]  # type: ignore[assignment]
                if chunk.error is not msgspec.UNSET or not self._started:
                    self._chunk(data, out, chunk)
            choices = chunk.choices
            if chunk.usage:
                self._usage = parse_usage(chunk.usage)
                if not choices and not self.include_usage:
                    continue
            self._kept.append(data)
            for choice in choices or ():
                delta = choice.delta
                if delta is not None:
                    if delta.tool_calls is None and delta.reasoning_content is None:
                        if delta.content:
                            text.append(delta.content)
                    else:
                        if text:
                            out.append(TextDelta("".join(text)))
                            text = []
                        self._delta(delta, out)
                if choice.finish_reason:
                    self._finished = True
                    self._stop = FINISH_TO_STOP.get(choice.finish_reason, "end_turn")
        if text:
            out.append(TextDelta("".join(text)))
        return out


STREAM_DONE = b"data: [DONE]\n\n"  # a stream's last bytes


class StreamEncoder:
    """Stream events -> OpenAI SSE bytes for a client."""

    def __init__(self, model: str, include_usage: bool, request_id: str) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        self._usage = Usage()
        # Every chunk is the same JSON around its delta: the constant parts serialised once
        # (byte for byte what orjson.dumps of the whole chunk gives).
        head = orjson.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                             "model": model})
        self._head = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._usage_null = b',"usage":null' if include_usage else b""
        self._tail = self._ending(None)

    def _ending(self, finish: str | None) -> bytes:
        return b',"finish_reason":' + orjson.dumps(finish) + b',"logprobs":null}]' + self._usage_null + b"}\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._head + orjson.dumps(delta) + (self._tail if finish is None else self._ending(finish))

    def encode(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._head + b'{"content":' + orjson.dumps(ev.text) + b"}" + self._tail
        if isinstance(ev, ToolCallDelta):
            return self._chunk({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.arguments}}]})
        if isinstance(ev, StreamStart):
            if ev.usage:
                self._usage = ev.usage
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(ev, ToolCallStart):
            call = {"index": ev.index, "id": ev.id, "type": "function", "function": {"name": ev.name, "arguments": ""}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(ev, StreamEnd):
            out = self._chunk({}, STOP_TO_FINISH.get(ev.stop_reason or "end_turn", "stop"))
            if self.include_usage:
                usage = ev.usage or self._usage
                chunk = {
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [], "usage": dump_usage(usage),
                }
                out += sse_line(orjson.dumps(chunk))
            return out
        return b""  # reasoning has no place in the OpenAI chunk schema

    @staticmethod
    def close() -> bytes:
        """A successful stream's last bytes (the same for every stream: no state needed)."""
        return STREAM_DONE

    def error(self, err: GatewayError) -> bytes:
        return sse_line(orjson.dumps({"error": error_body(err)}))


def error_body(err: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {"message": err.message, "type": err.type, "code": err.code, "param": err.param}
    body.update(err.extra)
    return body


def error_envelope(err: GatewayError) -> bytes:
    return orjson.dumps({"error": error_body(err)})
