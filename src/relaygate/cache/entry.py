"""A cached answer: the provider-neutral response, who served it, and its bytes form.
Stored once, it is rendered in whichever format (and as a stream or not) a later client asks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from relaygate.formats.types import (
    ChatResponse,
    ImagePart,
    Part,
    ReasoningDelta,
    ReasoningPart,
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
from relaygate.pipeline.context import StreamBody

_FORMAT = 1
_REPLAY_CHUNK = 64  # characters per replayed text delta


@dataclass(slots=True)
class CachedAnswer:
    response: ChatResponse
    provider: str
    model: str
    route: str
    tenant: str
    stored_at: float = field(default_factory=time.time)
    question: str | None = None  # the semantic tier's embedded text (for logs and feedback)

    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "v": _FORMAT, "response": _dump_response(self.response), "provider": self.provider,
            "model": self.model, "route": self.route, "tenant": self.tenant, "stored_at": self.stored_at,
            "question": self.question,
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer | None:
        """None for bytes this version cannot read (an older format: a miss, not an error)."""
        try:
            d = orjson.loads(raw)
            if d.get("v") != _FORMAT:
                return None
            return cls(_load_response(d["response"]), d["provider"], d["model"], d["route"], d["tenant"],
                       d["stored_at"], d.get("question"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def _dump_part(p: Part) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, ToolCallPart):
        return {"type": "tool_call", "id": p.id, "name": p.name, "arguments": p.arguments}
    if isinstance(p, ReasoningPart):
        return {"type": "reasoning", "text": p.text, "signature": p.signature}
    if isinstance(p, ImagePart):
        return {"type": "image", "url": p.url, "data": p.data, "media_type": p.media_type}
    assert isinstance(p, ToolResultPart)
    return {"type": "text", "text": ""}  # never in an answer


def _load_part(d: dict[str, Any]) -> Part:
    kind = d["type"]
    if kind == "text":
        return TextPart(d["text"])
    if kind == "tool_call":
        return ToolCallPart(d["id"], d["name"], d["arguments"])
    if kind == "reasoning":
        return ReasoningPart(d["text"], d.get("signature"))
    if kind == "image":
        return ImagePart(url=d.get("url"), data=d.get("data"), media_type=d.get("media_type"))
    raise ValueError(f"unknown part {kind!r}")


def _dump_usage(u: Usage) -> dict[str, int]:
    return {"input": u.input_tokens, "output": u.output_tokens, "cache_read": u.cache_read_tokens,
            "cache_write": u.cache_write_tokens, "reasoning": u.reasoning_tokens}


def _load_usage(d: dict[str, int]) -> Usage:
    return Usage(d["input"], d["output"], d["cache_read"], d["cache_write"], d["reasoning"])


def _dump_response(r: ChatResponse) -> dict[str, Any]:
    return {"id": r.id, "model": r.model, "content": [_dump_part(p) for p in r.content],
            "stop_reason": r.stop_reason, "usage": _dump_usage(r.usage), "created": r.created,
            "stop_sequence": r.stop_sequence}


def _load_response(d: dict[str, Any]) -> ChatResponse:
    return ChatResponse(d["id"], d["model"], [_load_part(p) for p in d["content"]], d["stop_reason"],
                        _load_usage(d["usage"]), d.get("created", 0), d.get("stop_sequence"))


def replay_events(response: ChatResponse) -> list[StreamEvent]:
    """The stream a provider would have sent for this answer."""
    events: list[StreamEvent] = [StreamStart(response.id, response.model)]
    calls = 0
    for p in response.content:
        if isinstance(p, ReasoningPart):
            events.append(ReasoningDelta(p.text, p.signature))
        elif isinstance(p, TextPart):
            events.extend(TextDelta(p.text[i:i + _REPLAY_CHUNK]) for i in range(0, len(p.text), _REPLAY_CHUNK))
        elif isinstance(p, ToolCallPart):
            events.append(ToolCallStart(calls, p.id, p.name))
            events.append(ToolCallDelta(calls, p.arguments))
            calls += 1
    u = response.usage
    events.append(StreamEnd(response.stop_reason,
                            Usage(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
                                  u.reasoning_tokens),
                            response.stop_sequence))
    return events


async def _nothing() -> AsyncIterator[list[StreamEvent]]:
    return
    yield  # an async generator that yields nothing


def replay_stream(response: ChatResponse) -> StreamBody:
    """A stream body the server encodes in the client's format, as for a provider stream."""
    return StreamBody(replay_events(response), _nothing(), lambda: None)
