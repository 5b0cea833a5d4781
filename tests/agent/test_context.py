"""ContextWindowManager: first N + summary + last M, tool calls kept whole, old results pruned."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from openai import AsyncOpenAI

from relaygate.agent import ContextWindowManager, OpenAISummariser
from relaygate.agent.context import PRUNED_STUB

from .agent_testkit import ScriptedOpenAI, ScriptedReply


class RecordingSummariser:
    def __init__(self) -> None:
        self.calls: list[list[Mapping[str, Any]]] = []

    async def __call__(self, messages: Sequence[Mapping[str, Any]]) -> str:
        self.calls.append(list(messages))
        return f"summary of {len(messages)}"


def _call(call_id: str, name: str = "notebook_run_cell") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}],
    }


def _result(call_id: str, content: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    for i in range(turns):
        messages += [_call(f"c{i}"), _result(f"c{i}", f"result {i}"), {"role": "assistant", "content": f"note {i}"}]
    return messages


async def test_keeps_first_and_last_and_summarises_the_middle() -> None:
    summariser = RecordingSummariser()
    manager = ContextWindowManager(summariser, keep_first=2, keep_last=3)
    messages = _conversation(6)  # 20 messages
    before = copy.deepcopy(messages)
    fitted = await manager.fit(messages)
    assert messages == before  # input untouched
    assert fitted[:2] == messages[:2]
    assert fitted[-3:] == messages[-3:]
    assert fitted[2]["role"] == "system" and "summary of 15" in fitted[2]["content"]
    assert summariser.calls[0] == messages[2:17]


async def test_never_separates_a_tool_call_from_its_result() -> None:
    summariser = RecordingSummariser()
    for keep_first in range(1, 6):
        for keep_last in range(1, 8):
            manager = ContextWindowManager(summariser, keep_first=keep_first, keep_last=keep_last)
            fitted = await manager.fit(_conversation(6))
            open_calls: set[str] = set()
            for message in fitted:
                for call in message.get("tool_calls") or []:
                    open_calls.add(call["id"])
                if message["role"] == "tool":
                    assert message["tool_call_id"] in open_calls, (keep_first, keep_last, fitted)
            answered = {m["tool_call_id"] for m in fitted if m["role"] == "tool"}
            assert open_calls == answered, (keep_first, keep_last)


async def test_parallel_tool_results_stay_with_their_call() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "t", "arguments": "{}"}},
        ],
    }
    messages = [{"role": "user", "content": "go"}] + [{"role": "user", "content": f"m{i}"} for i in range(6)]
    messages += [call, _result("a"), _result("b"), {"role": "assistant", "content": "done"}]
    fitted = await ContextWindowManager(RecordingSummariser(), keep_first=1, keep_last=2).fit(messages)
    assert fitted[-4:] == messages[-4:]  # the tail grew back to include the call


async def test_short_conversations_and_token_trigger_are_left_alone() -> None:
    summariser = RecordingSummariser()
    assert await ContextWindowManager(summariser, keep_first=2, keep_last=30).fit(_conversation(3)) == _conversation(3)
    lazy = ContextWindowManager(summariser, keep_first=1, keep_last=1, trigger_tokens=10_000)
    assert await lazy.fit(_conversation(5)) == _conversation(5)
    assert summariser.calls == []


async def test_old_unreferenced_tool_results_are_pruned() -> None:
    big = "x" * 5000
    messages = [{"role": "user", "content": "go"}]
    for i in range(4):
        messages += [_call(f"c{i}"), _result(f"c{i}", big)]
    messages.append({"role": "assistant", "content": "as c1 showed, ..."})
    manager = ContextWindowManager(RecordingSummariser(), keep_first=50, keep_last=50, keep_tool_results=1)
    fitted = await manager.fit(messages)
    contents = {m["tool_call_id"]: m["content"] for m in fitted if m["role"] == "tool"}
    assert contents["c0"] == PRUNED_STUB.format(chars=5000)
    assert contents["c1"] == big  # referenced later
    assert contents["c2"] == PRUNED_STUB.format(chars=5000)
    assert contents["c3"] == big  # most recent
    assert len(fitted) == len(messages)


async def test_openai_summariser_calls_the_gateway() -> None:
    async with ScriptedOpenAI(lambda body: ScriptedReply(content="They computed 42.")) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
        manager = ContextWindowManager(OpenAISummariser(client, "summary-model"), keep_first=2, keep_last=2)
        fitted = await manager.fit(_conversation(4))
        await client.close()
    assert "They computed 42." in fitted[2]["content"]
    [request] = server.requests
    assert request["model"] == "summary-model"
    transcript = request["messages"][1]["content"]
    assert "[calls notebook_run_cell({})]" in transcript and "result 0" in transcript
