"""An agent loop: a model behind relaygate (OpenAI chat-completions wire format, with tools)
and the sandboxed notebook served by `relaygate sandbox serve` (MCP), guarded by the
relaygate.agent toolkit.

    python examples/agent_loop.py --gateway http://127.0.0.1:8080/v1 --key sk-... \\
        --model gpt-4o "Plot a sine wave and tell me its maximum"

Each turn: fit the conversation into the context window, ask the model (streaming, falling
back to non-streaming after an overload), run the tool calls it asks for through the
duplicate guard and the per-tool circuit breaker, feed the results back, and stop when it
answers without tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent
from openai import AsyncOpenAI

from relaygate.agent import (
    ContextWindowManager,
    DuplicateToolCallGuard,
    OpenAISummariser,
    StreamingFallback,
    ToolCircuitBreaker,
    UsageLimiter,
    canonicalize_tool_result,
)

SYSTEM = (
    "You are a careful analyst. Use the notebook_run_cell tool to run Python; its variables "
    "persist between calls. Answer plainly when you are done."
)


@dataclass
class AgentRun:
    """What happened: the final answer, the whole conversation, the notices shown to the user."""

    answer: str
    messages: list[dict[str, Any]]
    tool_calls: int = 0
    notices: list[str] = field(default_factory=list)


def openai_tools(session_tools: list[Any]) -> list[dict[str, Any]]:
    """MCP tool descriptions in the chat-completions `tools` format."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.inputSchema},
        }
        for t in session_tools
    ]


async def _ask_streaming(client: AsyncOpenAI, request: dict[str, Any]) -> dict[str, Any]:
    """One streamed completion, assembled into a message dict (text and tool calls)."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage = 0
    stream = await client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            text.append(delta.content)
        for call in delta.tool_calls or []:
            slot = calls.setdefault(call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
            if call.id:
                slot["id"] = call.id
            if call.function and call.function.name:
                slot["function"]["name"] += call.function.name
            if call.function and call.function.arguments:
                slot["function"]["arguments"] += call.function.arguments
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"message": message, "tokens": usage}


async def _ask_once(client: AsyncOpenAI, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.chat.completions.create(**request)
    choice = response.choices[0].message
    message: dict[str, Any] = {"role": "assistant", "content": choice.content}
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in choice.tool_calls
            if c.type == "function"
        ]
    return {"message": message, "tokens": response.usage.total_tokens if response.usage else 0}


def _result_text(result: Any) -> str:
    parts = [block.text for block in result.content if isinstance(block, TextContent)]
    images = sum(1 for block in result.content if getattr(block, "type", "") == "image")
    if images:
        parts.append(f"[{images} image(s) produced]")
    return canonicalize_tool_result("\n".join(parts))


async def run_agent(
    task: str,
    *,
    client: AsyncOpenAI,
    model: str,
    sandbox: ClientSession,
    user: str = "example-user",
    max_turns: int = 8,
    stream: bool = True,
    on_notice: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    breaker: ToolCircuitBreaker | None = None,
    usage: UsageLimiter | None = None,
) -> AgentRun:
    """Run `task` to an answer (or `max_turns` model calls)."""
    tools = openai_tools((await sandbox.list_tools()).tools)
    run = AgentRun(answer="", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}])

    def notice(text: str) -> None:
        run.notices.append(text)
        on_notice(text)

    context = ContextWindowManager(OpenAISummariser(client, model), keep_first=2, keep_last=16, trigger_tokens=60_000)
    fallback = StreamingFallback(notice)
    if not stream:
        fallback.streaming = False
    guard = DuplicateToolCallGuard(window_s=300)
    breaker = breaker or ToolCircuitBreaker(threshold=3, reset_timeout_s=60)
    usage = usage or UsageLimiter(2_000_000)

    for _ in range(max_turns):
        budget = await usage.try_consume(user, 0)
        if not budget.allowed or budget.remaining == 0:
            run.answer = f"Stopped: the hourly token budget is used up (retry in {budget.retry_after:.0f} s)."
            return run
        run.messages = await context.fit(run.messages)
        request = {"model": model, "messages": run.messages, "tools": tools}
        reply = await fallback.run(
            lambda r=request: _ask_streaming(client, r),  # type: ignore[misc]
            lambda r=request: _ask_once(client, r),  # type: ignore[misc]
        )
        await usage.record(user, int(reply["tokens"]))
        message = reply["message"]
        run.messages.append(message)
        calls = message.get("tool_calls") or []
        if not calls:
            run.answer = message.get("content") or ""
            return run
        for call in calls:
            name = call["function"]["name"]
            try:
                arguments = json.loads(call["function"]["arguments"] or "{}")
            except json.JSONDecodeError as exc:
                content = f"Refused: the arguments are not valid JSON ({exc}). Send a JSON object."
            else:
                content = await _run_tool(sandbox, guard, breaker, name, arguments)
                run.tool_calls += 1
            run.messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    run.answer = "Stopped: too many turns without a final answer."
    return run


async def _run_tool(
    sandbox: ClientSession, guard: DuplicateToolCallGuard, breaker: ToolCircuitBreaker, name: str, arguments: dict[str, Any]
) -> str:
    repeat = guard.check(name, arguments)
    if not repeat.allowed:
        return repeat.message
    gate = await breaker.allow(name)
    if not gate.allowed:
        guard.forget(name, arguments)
        return gate.message
    try:
        result = await sandbox.call_tool(name, arguments)
    except Exception as exc:  # the tool itself broke (transport, server): count it
        await breaker.record_failure(name)
        guard.forget(name, arguments)
        return f"The tool `{name}` failed: {exc}"
    # A cell that raised is the model's bug, not a broken tool: only outages trip the breaker.
    await breaker.record_success(name)
    text = _result_text(result)
    return f"[error]\n{text}" if result.isError else text


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080/v1", help="OpenAI-compatible base URL")
    parser.add_argument("--key", default="sk-relaygate", help="gateway (virtual) key")
    parser.add_argument("--model", default="mock")
    parser.add_argument("--sandbox-config", help="YAML for `relaygate sandbox serve --config`")
    parser.add_argument("--no-stream", action="store_true")
    args = parser.parse_args(argv)
    serve = ["-m", "relaygate.agent.cli", "serve"] + (["--config", args.sandbox_config] if args.sandbox_config else [])
    params = StdioServerParameters(command=sys.executable, args=serve)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as sandbox:
        await sandbox.initialize()
        client = AsyncOpenAI(base_url=args.gateway, api_key=args.key)
        run = await run_agent(args.task, client=client, model=args.model, sandbox=sandbox, stream=not args.no_stream)
        await client.close()
    print(run.answer)


if __name__ == "__main__":
    asyncio.run(main())
