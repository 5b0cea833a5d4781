"""Helpers shared by the agent tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from relaygate.agent.sandbox.config import SandboxConfig

REDIS_URL = os.environ.get("RELAYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("RELAYGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def make_config(tmp_path: Path, **overrides: object) -> SandboxConfig:
    """A sandbox config confined to tmp_path, with quiet background loops unless overridden."""
    values: dict[str, object] = {
        "work_root": tmp_path / "sandbox",
        "database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "instance": f"test-{uuid.uuid4().hex[:8]}",
        "memory_mb": 1024,
        "max_processes": 48,
        "health_interval_s": 3600,
        "idle_stop_s": 3600,
        "interrupt_grace_s": 2,
    }
    values.update(overrides)
    return SandboxConfig.model_validate(values)


def kernel_pids(connection_file: Path) -> list[int]:
    """Real kernel processes (the python running ipykernel, not the bwrap wrappers) for one
    connection file, found by scanning /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and os.path.basename(argv[0]).startswith(b"python")
            and b"ipykernel_launcher" in argv
            and str(connection_file).encode() in argv
        ):
            pids.append(int(entry))
    return pids


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Reply = Callable[[dict[str, Any]], "ScriptedReply"]


@dataclass
class ScriptedReply:
    """What the scripted server answers: a message (text and/or tool calls) or an error."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    error_type: str = "api_error"
    break_stream: bool = False
    """Streaming only: send one chunk, then an SSE error event."""


class ScriptedOpenAI:
    """A tiny OpenAI-compatible chat-completions server on a real socket (aiohttp), for
    driving the real `openai` SDK. `reply` decides every answer from the request body."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> ScriptedOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = self.reply(body)
        if reply.status != 200:
            return web.json_response(
                {"error": {"message": f"scripted {reply.error_type}", "type": reply.error_type}}, status=reply.status
            )
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": call.get("id", f"call_{i}"), "type": "function",
                 "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}
                for i, call in enumerate(reply.tool_calls)
            ]
        finish = "tool_calls" if reply.tool_calls else "stop"
        base = {"id": "chatcmpl-scripted", "created": 0, "model": body.get("model", "m")}
        if not body.get("stream"):
            return web.json_response({
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        chunk = {**base, "object": "chat.completion.chunk"}
        await send({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        if reply.break_stream:
            await send({"error": {"message": "Overloaded", "type": "overloaded_error"}})
            await response.write_eof()
            return response
        if reply.content:
            await send({**chunk, "choices": [{"index": 0, "delta": {"content": reply.content}, "finish_reason": None}]})
        for i, call in enumerate(message.get("tool_calls", [])):
            await send({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **call}]}, "finish_reason": None}]})
        await send({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
