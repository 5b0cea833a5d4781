"""The sandbox server as a real process, driven by the official MCP client over stdio and
over streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

SERVE = [sys.executable, "-m", "relaygate.agent.cli", "serve"]


def _write_config(tmp_path: Path, **extra: str) -> Path:
    lines = [
        "sandbox:",
        f"  work_root: {tmp_path / 'sandbox'}",
        f"  database_url: sqlite:///{tmp_path / 'state.db'}",
        f"  instance: e2e-{tmp_path.name}",
        f"  run_root: {tmp_path / 'run'}",
        "  memory_mb: 1024",
    ] + [f"  {key}: {value}" for key, value in extra.items()]
    path = tmp_path / "relaygate.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _text(result: object) -> str:
    content = getattr(result, "content", [])
    return "\n".join(block.text for block in content if isinstance(block, TextContent))


async def _exercise(session: ClientSession) -> None:
    await session.initialize()
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert {"notebook_run_cell", "notebook_reset"} <= set(tools)
    assert {"code", "description", "timeout", "thread_id"} <= set(tools["notebook_run_cell"].inputSchema["properties"])

    first = await session.call_tool("notebook_run_cell", {"code": "x = 20\nprint('hello')\nx + 1", "description": "set x"})
    assert not first.isError
    assert _text(first) == "hello\n21"
    second = await session.call_tool("notebook_run_cell", {"code": "x * 2", "description": "reuse x"})
    assert _text(second) == "40"  # one session, one thread, one persistent kernel

    failing = await session.call_tool("notebook_run_cell", {"code": "1 / 0", "description": "fail"})
    assert failing.isError and "ZeroDivisionError" in _text(failing)

    slow = await session.call_tool(
        "notebook_run_cell", {"code": "import time\ntime.sleep(30)", "description": "slow", "timeout": 1}
    )
    assert slow.isError and "timed out" in _text(slow)

    other = await session.call_tool(
        "notebook_run_cell", {"code": "'x' in globals()", "description": "other thread", "thread_id": "named"}
    )
    assert _text(other) == "False"  # a named thread is a different kernel

    await session.call_tool("notebook_reset", {})
    after = await session.call_tool("notebook_run_cell", {"code": "'x' in globals()", "description": "after reset"})
    assert _text(after) == "False"


async def test_stdio_session_runs_cells(tmp_path: Path) -> None:
    params = StdioServerParameters(command=SERVE[0], args=[*SERVE[1:], "--config", str(_write_config(tmp_path))])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await _exercise(session)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _http_server(config: Path) -> AsyncIterator[str]:
    port = _free_port()
    log = config.parent / "server.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *SERVE, "--config", str(config), "--port", str(port), stderr=stderr
        )
    try:
        for _ in range(200):
            if process.returncode is not None:
                raise AssertionError(f"server exited: {log.read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0, log.read_text()  # SIGTERM is a clean shutdown


async def test_streamable_http_sessions_are_separate_threads(tmp_path: Path) -> None:
    async with _http_server(_write_config(tmp_path)) as url:
        async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
            await _exercise(session)
        async with (
            streamable_http_client(url) as (read, write, _),
            ClientSession(read, write) as a,
            streamable_http_client(url) as (read2, write2, _),
            ClientSession(read2, write2) as b,
        ):
            await a.initialize()
            await b.initialize()
            await a.call_tool("notebook_run_cell", {"code": "mine = 'a'", "description": "a"})
            seen = await b.call_tool("notebook_run_cell", {"code": "'mine' in globals()", "description": "b"})
            assert _text(seen) == "False"
            shared = await b.call_tool("notebook_run_cell", {"code": "shared = 1", "description": "b", "thread_id": "common"})
            assert not shared.isError
            both = await a.call_tool("notebook_run_cell", {"code": "shared + 1", "description": "a", "thread_id": "common"})
            assert _text(both) == "2"
        assert len(list((tmp_path / "run").iterdir())) == 5  # five threads, five kernels
    assert list((tmp_path / "run").iterdir()) == []  # stopped and cleaned up on SIGTERM


def test_refuses_to_start_when_the_sandbox_cannot_run(tmp_path: Path) -> None:
    # An interpreter the sandbox cannot execute makes the real bubblewrap probe fail.
    config = _write_config(tmp_path, python="/nonexistent/python3")
    done = subprocess.run([*SERVE, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "refusing to start" in done.stderr and "--insecure-no-sandbox" in done.stderr


def test_invalid_config_is_reported(tmp_path: Path) -> None:
    config = _write_config(tmp_path, memory_mb="lots")
    done = subprocess.run([*SERVE, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "memory_mb" in done.stderr


async def test_insecure_mode_runs_without_bubblewrap(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:], "--config", str(_write_config(tmp_path)), "--insecure-no-sandbox"]
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("notebook_run_cell", {"code": "import os; os.getuid()", "description": "uid"})
        assert _text(result) == str(os.geteuid())  # no privilege drop: that is what the flag means
