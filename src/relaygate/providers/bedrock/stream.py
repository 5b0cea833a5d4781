"""Bedrock event streams -> stream events: ConverseStream's own events, and
InvokeModelWithResponseStream's `chunk` events, each wrapping one Anthropic SSE event
(base64 JSON) that the Anthropic decoder reads unchanged."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from relaygate.errors import UpstreamError
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats.types import (
    ReasoningDelta,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from relaygate.providers.bedrock import converse
from relaygate.providers.bedrock.eventstream import EventStreamReader


class BedrockStreamDecoder:
    def __init__(self, provider: str, secrets: list[str], model: str = "") -> None:
        self.provider = provider
        self.model = model
        self._reader = EventStreamReader(provider, secrets)
        self._anthropic: anthropic_fmt.StreamDecoder | None = None
        self._started = False
        self._tool_of_block: dict[int, int] = {}
        self._stop: StopReason | None = None
        self._stopped = False
        self._usage: Usage | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for kind, data in self._reader.feed(chunk):
            if self.done:
                break
            if kind == "chunk":
                self._invoke_chunk(data, out)
            else:
                self._converse_event(kind, data, out)
        return out

    def close(self) -> list[StreamEvent]:
        if self._anthropic is not None:
            if not self._anthropic.done:
                raise UpstreamError(502, f"{self.provider}: stream ended before message_stop")
            return []
        if self.done:
            return []
        if self._stopped and not self._reader.has_partial_message:
            # messageStop arrived but not the metadata event with usage.
            self.done = True
            return [StreamEnd(self._stop, self._usage)]
        raise UpstreamError(502, f"{self.provider}: stream ended before messageStop")

    def _invoke_chunk(self, data: dict[str, Any], out: list[StreamEvent]) -> None:
        try:
            event = orjson.loads(base64.b64decode(data.get("bytes") or b"", validate=True))
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise UpstreamError(502, f"{self.provider}: malformed chunk in the response stream") from None
        if self._anthropic is None:
            self._anthropic = anthropic_fmt.StreamDecoder()
        if isinstance(event, dict):
            out.extend(self._anthropic.feed_event(event))
            self.done = self._anthropic.done

    def _start(self, out: list[StreamEvent]) -> None:
        if not self._started:
            self._started = True
            out.append(StreamStart(converse.response_id(), self.model))

    def _converse_event(self, kind: str, d: dict[str, Any], out: list[StreamEvent]) -> None:
        if kind == "messageStart":
            self._start(out)
        elif kind == "contentBlockStart":
            self._start(out)
            use = (d.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = len(self._tool_of_block)
                self._tool_of_block[int(d.get("contentBlockIndex", 0))] = index
                out.append(ToolCallStart(index, str(use.get("toolUseId", "")), str(use.get("name", ""))))
        elif kind == "contentBlockDelta":
            self._start(out)
            delta = d.get("delta") or {}
            if "text" in delta:
                if delta["text"]:
                    out.append(TextDelta(str(delta["text"])))
            elif "toolUse" in delta:
                block = int(d.get("contentBlockIndex", 0))
                piece = (delta["toolUse"] or {}).get("input") or ""
                if block not in self._tool_of_block:
                    raise UpstreamError(502, f"{self.provider}: tool input delta for a block that never started")
                if piece:
                    out.append(ToolCallDelta(self._tool_of_block[block], str(piece)))
            elif "reasoningContent" in delta:
                reasoning = delta["reasoningContent"] or {}
                if reasoning.get("text"):
                    out.append(ReasoningDelta(str(reasoning["text"])))
                if reasoning.get("signature"):
                    out.append(ReasoningDelta("", str(reasoning["signature"])))
        elif kind == "messageStop":
            self._start(out)
            self._stopped = True
            self._stop = converse.stop_reason(d.get("stopReason")) or "end_turn"
        elif kind == "metadata":
            self._usage = converse.parse_usage(d.get("usage"))
            if self._stopped:
                self.done = True
                out.append(StreamEnd(self._stop, self._usage))
