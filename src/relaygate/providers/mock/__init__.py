"""The built-in `mock` provider: deterministic answers computed in process, no network.

It speaks the OpenAI format through an in-process transport, so it exercises the same
adapter, decoder and pipeline code as a real upstream. Model names inject faults, like
`relaygate mock-upstream`: `fail-<status>`, `hang`, `slow-<ms>`, `cut-<k>` (stream cut
after k chunks), `reply-<text>`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.errors import UpstreamError
from relaygate.formats import openai as fmt
from relaygate.formats.types import (
    ChatResponse,
    Part,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
)
from relaygate.mock_upstream.generate import MockToolCall, reply_for, split_chunks
from relaygate.providers.base import UpstreamRequest
from relaygate.providers.http import Deadlines, UpstreamResponse
from relaygate.providers.openai import OpenAIAdapter

MOCK_URL = "mock://local/v1"
_seq = itertools.count()


class MockAdapter(OpenAIAdapter):
    def __init__(self, name: str, cfg: ProviderConfig, api_key: str | None = None) -> None:
        super().__init__(name, cfg.model_copy(update={"base_url": MOCK_URL}), api_key or "mock-key")


def mock_response(body: dict[str, object]) -> ChatResponse:
    """The answer `generate.reply_for` gives to an OpenAI-format body."""
    req = fmt.parse_request(body)
    last_user = ""
    for m in reversed(req.messages):
        if m.role == "user":
            last_user = "".join(p.text for p in m.content if isinstance(p, TextPart)) or "".join(
                c.text for p in m.content if isinstance(p, ToolResultPart) for c in p.content if isinstance(c, TextPart)
            )
            break
    prompt_chars = sum(len(p.text) for p in req.system) + sum(
        len(getattr(p, "text", "") or getattr(p, "arguments", "")) for m in req.messages for p in m.content
    )
    model = str(body.get("model"))
    seq = next(_seq)
    calls: tuple[MockToolCall, ...] = ()
    if model.startswith("reply-"):
        text = model[len("reply-"):]
        reply = reply_for(text, prompt_chars, False, req.max_tokens, seq)
        reply_text, stop = text, "end_turn"
        usage = Usage(reply.input_tokens, max(1, len(text) // 4))
    else:
        reply = reply_for(last_user, prompt_chars, bool(req.tools), req.max_tokens, seq)
        reply_text, calls, stop = reply.text, reply.tool_calls, reply.stop_reason
        usage = Usage(reply.input_tokens, reply.output_tokens)
    content: list[Part] = []
    if reply_text:
        content.append(TextPart(reply_text))
    content.extend(ToolCallPart(c.id, c.name, c.arguments) for c in calls)
    return ChatResponse(f"mock-{seq}", model, content, stop, usage, created=int(time.time()))  # type: ignore[arg-type]


class MockTransport:
    """Answers OpenAI-format requests for `mock://` URLs in process."""

    async def send(self, req: UpstreamRequest, deadlines: Deadlines) -> UpstreamResponse:
        body = orjson.loads(req.body)
        model = str(body.get("model", ""))
        if model.startswith("fail-") and model[5:].isdigit():
            status = int(model[5:])
            err = {"error": {"message": f"mock failure {status}", "type": "mock_error", "code": None}}
            headers = {"retry-after": "1"} if status == 429 else {}
            return UpstreamResponse(status, headers, orjson.dumps(err))
        if model == "hang":
            try:
                async with asyncio.timeout(min(deadlines.first_byte_s, deadlines.total_s)):
                    await asyncio.sleep(3600)
            except TimeoutError:
                raise UpstreamError(504, "upstream timed out before answering") from None
        if model.startswith("slow-") and model[5:].isdigit():
            delay = int(model[5:]) / 1000
            if delay > min(deadlines.first_byte_s, deadlines.total_s):
                await asyncio.sleep(min(deadlines.first_byte_s, deadlines.total_s))
                raise UpstreamError(504, "upstream timed out before answering")
            await asyncio.sleep(delay)
        resp = mock_response(body)
        if not req.stream:
            return UpstreamResponse(200, {"content-type": "application/json"}, orjson.dumps(fmt.dump_response(resp, model)))
        cut = int(model[4:]) if model.startswith("cut-") and model[4:].isdigit() else None
        return UpstreamResponse(200, {"content-type": "text/event-stream"}, b"", _stream(resp, model, cut))


async def _stream(resp: ChatResponse, model: str, cut: int | None) -> AsyncIterator[bytes]:
    enc = fmt.StreamEncoder(model, True, resp.id)
    events: list[object] = [StreamStart(resp.id, model)]
    events.extend(TextDelta(piece) for piece in split_chunks(resp.text))
    for i, call in enumerate(resp.tool_calls):
        events.append(ToolCallStart(i, call.id, call.name))
        events.extend(ToolCallDelta(i, piece) for piece in split_chunks(call.arguments, 8))
    events.append(StreamEnd(resp.stop_reason, resp.usage))
    for n, ev in enumerate(events):
        if cut is not None and n >= cut:
            raise UpstreamError(502, "upstream stream connection broke")
        yield enc.encode(ev)  # type: ignore[arg-type]
        await asyncio.sleep(0)
    yield enc.close()
