"""examples/agent_loop.py end to end: `relaygate mock-upstream` and `relaygate serve` as real
processes, the real openai SDK against the gateway, and the sandbox MCP server over stdio."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from openai import AsyncOpenAI

from tests.e2e.procs import MASTER, gateway, mock_upstream

from .agent_testkit import ScriptedOpenAI, ScriptedReply

ROOT = Path(__file__).resolve().parents[2]


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("agent_loop_example", ROOT / "examples" / "agent_loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = _load_example()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("agent-e2e")
    with mock_upstream(log=tmp / "mock.log") as upstream:
        config = {
            "providers": {"oa": {"type": "openai-compatible", "base_url": f"{upstream}/v1", "api_key": "sk-up"}},
            "routes": {"agent-model": {"targets": [{"provider": "oa", "model": "gpt-x"}]}},
        }
        with gateway(config, tmp) as url:
            yield f"{url}/v1"


def _sandbox_params(tmp_path: Path) -> StdioServerParameters:
    config = tmp_path / "sandbox.yaml"
    config.write_text(
        f"sandbox:\n  work_root: {tmp_path / 'sandbox'}\n  database_url: sqlite:///{tmp_path / 'state.db'}\n"
        f"  instance: example-{tmp_path.name}\n  memory_mb: 1024\n"
    )
    return StdioServerParameters(command=sys.executable, args=["-m", "relaygate.agent.cli", "serve", "--config", str(config)])


CELL = {"code": "import math\nvalue = math.factorial(10)\nprint('factorial', value)", "description": "compute 10!"}


@pytest.mark.parametrize("stream", [True, False])
async def test_agent_loop_through_gateway_and_sandbox(stack: str, tmp_path: Path, stream: bool) -> None:
    task = "Compute 10 factorial in the notebook.\nCALL_TOOL notebook_run_cell " + json.dumps(CELL)
    async with stdio_client(_sandbox_params(tmp_path)) as (read, write), ClientSession(read, write) as sandbox:
        await sandbox.initialize()
        client = AsyncOpenAI(base_url=stack, api_key=MASTER, max_retries=0, timeout=60)
        run = await example.run_agent(task, client=client, model="agent-model", sandbox=sandbox, stream=stream)
        await client.close()
        # The kernel the agent used keeps its state for the session.
        check = await sandbox.call_tool("notebook_run_cell", {"code": "value", "description": "check"})
    assert run.tool_calls == 1
    tool_messages = [m for m in run.messages if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["content"] == "factorial 3628800"
    assert run.messages[2]["tool_calls"][0]["function"]["name"] == "notebook_run_cell"
    assert "3628800" in run.answer  # the mock answers with the tool result it was given
    assert check.content[0].text == "3628800"  # type: ignore[union-attr]


async def test_agent_loop_falls_back_to_non_streaming_and_guards_repeats(tmp_path: Path) -> None:
    """A scripted OpenAI-compatible server: streaming is overloaded, and the model repeats a
    tool call once before answering."""
    turns: list[dict[str, Any]] = []

    def reply(body: dict[str, Any]) -> ScriptedReply:
        if body.get("stream"):
            return ScriptedReply(status=529, error_type="overloaded_error")
        turns.append(body)
        if len(turns) <= 2:
            return ScriptedReply(tool_calls=[{"id": f"c{len(turns)}", "name": "notebook_run_cell", "arguments": CELL}])
        return ScriptedReply(content="10! is 3628800")

    async with (
        ScriptedOpenAI(reply) as server,
        stdio_client(_sandbox_params(tmp_path)) as (read, write),
        ClientSession(read, write) as sandbox,
    ):
        await sandbox.initialize()
        client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        run = await example.run_agent("compute", client=client, model="m", sandbox=sandbox, on_notice=lambda _: None)
        await client.close()
    assert run.answer == "10! is 3628800"
    assert len(run.notices) == 1 and "overloaded" in run.notices[0]
    tool_messages = [m["content"] for m in run.messages if m["role"] == "tool"]
    assert tool_messages[0] == "factorial 3628800"
    assert tool_messages[1].startswith("Refused: you already called `notebook_run_cell`")
    assert run.tool_calls == 2
