"""The MCP server: `notebook_run_cell` and `notebook_reset` over a `KernelPool`.

One MCP session is one thread (so a client gets its own kernel without saying anything); a
`thread_id` argument names the thread instead, for clients that multiplex threads.
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

from mcp.server.fastmcp import Context, FastMCP
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent

from relaygate.agent.sandbox.kernel import KernelStartError
from relaygate.agent.sandbox.pool import KernelPool, SandboxFull, ThreadBusyElsewhere

INSTRUCTIONS = (
    "A persistent Python notebook. Each conversation thread has its own IPython kernel: "
    "variables and imports persist between cells. Files live in /workspace. There is no "
    "network access."
)


class SessionThreads:
    """Gives every MCP session its own thread id, for as long as the session lives."""

    def __init__(self) -> None:
        self._ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def thread_for(self, ctx: Context[Any, Any, Any], explicit: str | None) -> str:
        if explicit:
            return explicit
        session = ctx.session
        thread = self._ids.get(session)
        if thread is None:
            thread = f"session-{uuid.uuid4().hex}"
            self._ids[session] = thread
        return thread


def build_server(pool: KernelPool, *, host: str = "127.0.0.1", port: int = 8000) -> FastMCP:
    """A FastMCP server whose tools run cells on `pool` (which the caller starts and closes)."""
    mcp = FastMCP("relaygate-sandbox", instructions=INSTRUCTIONS, host=host, port=port, log_level="WARNING")
    threads = SessionThreads()

    @mcp.tool()
    async def notebook_run_cell(
        code: str,
        description: str,
        ctx: Context[Any, Any, Any],
        timeout: float = 3600,
        thread_id: str | None = None,
    ) -> CallToolResult:
        """Run Python code in this thread's persistent IPython kernel and return its output
        (stdout, stderr, the value of the last expression, images, or the traceback).

        Args:
            code: the cell's source.
            description: one line saying what the cell is for (shown to the user).
            timeout: seconds before the cell is interrupted.
            thread_id: run in this thread's kernel instead of the session's own.
        """
        thread = threads.thread_for(ctx, thread_id)
        try:
            result = await pool.run_cell(thread, code, max(0.1, float(timeout)))
        except (SandboxFull, ThreadBusyElsewhere, KernelStartError, TimeoutError) as exc:
            return CallToolResult(content=[TextContent(type="text", text=f"[notebook unavailable] {exc}")], isError=True)
        content: list[ContentBlock] = [TextContent(type="text", text=result.text or "[no output]")]
        content += [ImageContent(type="image", data=image, mimeType="image/png") for image in result.images]
        return CallToolResult(content=content, isError=result.is_error)

    @mcp.tool()
    async def notebook_reset(ctx: Context[Any, Any, Any], thread_id: str | None = None) -> str:
        """Restart this thread's kernel: every variable is forgotten; files in /workspace stay.

        Args:
            thread_id: reset this thread's kernel instead of the session's own.
        """
        thread = threads.thread_for(ctx, thread_id)
        await pool.reset(thread)
        return "The kernel was restarted; all variables were cleared. Files in /workspace are kept."

    return mcp
