"""What every provider endpoint shares: server state, fault application, sending bodies
and streams (with cuts), and request statistics.

A provider module parses its wire format, then calls, in order:
`state.decide` -> `apply_fault` (may answer with an error or hang) -> build the answer
-> `send_body` / `send_stream`. Each request is counted once in `state.stats`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from relaygate.mock_upstream.faults import Fault, FaultConfig, FaultInjector
from relaygate.mock_upstream.generate import MockReply, count_tokens, reply_for
from relaygate.mock_upstream.prompt_cache import PromptCacheMemory

# A provider's error envelope: (status, message, headers) -> its shaped response.
ErrorResponder = Callable[[int, str, dict[str, str]], web.Response]

_HANG_POLL_S = 0.2


@dataclass(slots=True)
class RequestStats:
    """Request counts by (path kind, model, outcome) since start or the last reset."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def record(self, kind: str, model: str, outcome: str) -> None:
        self.counts[(kind, model, outcome)] += 1

    def as_json(self) -> dict[str, Any]:
        by_outcome: Counter[str] = Counter()
        rows = []
        for (kind, model, outcome), count in sorted(self.counts.items()):
            by_outcome[outcome] += count
            rows.append({"kind": kind, "model": model, "outcome": outcome, "count": count})
        return {"total": sum(by_outcome.values()), "by_outcome": dict(by_outcome), "requests": rows}


@dataclass(slots=True)
class MockState:
    """Everything a running mock-upstream remembers."""

    config: FaultConfig
    injector: FaultInjector = field(init=False)
    stats: RequestStats = field(default_factory=RequestStats)
    prompt_cache: PromptCacheMemory = field(default_factory=PromptCacheMemory)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.injector = FaultInjector(self.config)

    def next_seq(self) -> int:
        return next(self._seq)

    def decide(self, model: str, stream: bool) -> Fault:
        return self.injector.decide(model, stream)

    def reset(self) -> None:
        self.stats = RequestStats()
        self.prompt_cache.reset()


STATE_KEY: web.AppKey[MockState] = web.AppKey("mock_state", MockState)


def state_of(request: web.Request) -> MockState:
    return request.app[STATE_KEY]


async def read_json(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def mock_reply(
    state: MockState,
    fault: Fault,
    last_user_text: str,
    prompt_chars: int,
    tools_offered: bool,
    max_tokens: int | None,
) -> MockReply:
    """generate.reply_for, unless a `reply-<text>` model forces the answer text."""
    seq = state.next_seq()
    if fault.reply_text is not None:
        text = fault.reply_text
        return MockReply(text, (), "end_turn", max(1, math.ceil(prompt_chars / 4)), count_tokens(text))
    return reply_for(last_user_text, prompt_chars, tools_offered, max_tokens, seq)


async def apply_fault(
    request: web.Request,
    kind: str,
    model: str,
    fault: Fault,
    errors: ErrorResponder,
) -> web.StreamResponse | None:
    """Waits, hangs or fails as `fault` says; None means: go on and answer."""
    state = state_of(request)
    if fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault.hang:
        state.stats.record(kind, model, "hang")
        await _wait_for_client_to_leave(request)
        return web.Response(status=504)  # never reaches the client
    if fault.fail_status is not None:
        status = fault.fail_status
        state.stats.record(kind, model, f"fail_{status}")
        headers: dict[str, str] = {}
        if status == 429 or status == 529:
            seconds = state.config.retry_after_s
            headers["retry-after"] = str(seconds)
            headers["retry-after-ms"] = str(seconds * 1000)
        return errors(status, _FAIL_MESSAGES.get(status, f"mock upstream injected status {status}"), headers)
    return None


def reject(
    request: web.Request, kind: str, model: str, errors: ErrorResponder, status: int, message: str
) -> web.Response:
    """Answers a malformed or unauthenticated request (counted as `rejected_<status>`)."""
    state_of(request).stats.record(kind, model, f"rejected_{status}")
    return errors(status, message, {})


async def send_body(
    request: web.Request,
    kind: str,
    model: str,
    fault: Fault,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> web.StreamResponse:
    """Sends a whole JSON answer. `cut-<k>` sends half of it and drops the connection;
    `stall-<k>` sends half of it and goes silent until the client leaves."""
    state = state_of(request)
    broken = fault.cut_after is not None or fault.stall_after is not None
    if not broken:
        state.stats.record(kind, model, "ok")
        return web.Response(body=body, headers=headers, content_type=content_type)
    state.stats.record(kind, model, "cut" if fault.cut_after is not None else "stall")
    response = web.StreamResponse(headers=headers)
    response.content_type = content_type
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if fault.stall_after is not None:
        await _wait_for_client_to_leave(request)
    _drop_connection(request, response)
    return response


async def send_stream(
    request: web.Request,
    kind: str,
    model: str,
    fault: Fault,
    chunks: Sequence[bytes],
    content_type: str,
    headers: dict[str, str] | None = None,
    error_chunk: bytes | None = None,
) -> web.StreamResponse:
    """Streams `chunks` (each one event), pacing them by `--stream-chunk-ms`.

    A broken stream sends at most k chunks, always withholding the last (terminating) one,
    then: `cut` closes the connection without ending the chunked body; `stall` goes silent
    with the connection open until the client leaves; `error` sends `error_chunk` (the
    format's in-stream error event) and ends the body cleanly.
    """
    state = state_of(request)
    broken_after = _first_not_none(fault.cut_after, fault.stall_after, fault.error_after)
    limit = len(chunks) if broken_after is None else max(0, min(broken_after, len(chunks) - 1))
    state.stats.record(kind, model, _stream_outcome(fault))
    response = web.StreamResponse(headers=headers)
    response.content_type = content_type
    if content_type == "text/event-stream":
        response.charset = "utf-8"
        response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    pause = state.config.stream_chunk_ms / 1000
    try:
        if pause == 0:
            await response.write(b"".join(chunks[:limit]))
        else:
            for i, chunk in enumerate(chunks[:limit]):
                if i:
                    await asyncio.sleep(pause)
                await response.write(chunk)
        if fault.error_after is not None and error_chunk is not None:
            await response.write(error_chunk)
            await response.write_eof()
            return response
    except ConnectionError:
        return response  # the client left; nothing more to do
    if fault.stall_after is not None:
        await _wait_for_client_to_leave(request)
    if broken_after is not None:
        _drop_connection(request, response)
        return response
    await response.write_eof()
    return response


def _first_not_none(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _stream_outcome(fault: Fault) -> str:
    if fault.cut_after is not None:
        return "cut"
    if fault.stall_after is not None:
        return "stall"
    if fault.error_after is not None:
        return "stream_error"
    return "ok"


def sse_event(payload: Any, event: str | None = None) -> bytes:
    """One server-sent event: `event: <name>` (when given) and `data: <json>`."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _drop_connection(request: web.Request, response: web.StreamResponse) -> None:
    response.force_close()
    transport = request.transport
    if transport is not None:
        transport.close()  # flushes what was written, then closes without the body's end


async def _wait_for_client_to_leave(request: web.Request) -> None:
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(_HANG_POLL_S)


_FAIL_MESSAGES = {
    400: "Invalid request (injected by mock upstream).",
    401: "Invalid API key (injected by mock upstream).",
    403: "Permission denied (injected by mock upstream).",
    404: "Model not found (injected by mock upstream).",
    408: "Request timed out (injected by mock upstream).",
    429: "Rate limit reached; please try again later (injected by mock upstream).",
    500: "The server had an error while processing your request (injected by mock upstream).",
    502: "Bad gateway (injected by mock upstream).",
    503: "The service is temporarily overloaded (injected by mock upstream).",
    504: "Gateway timeout (injected by mock upstream).",
    529: "Overloaded (injected by mock upstream).",
}
