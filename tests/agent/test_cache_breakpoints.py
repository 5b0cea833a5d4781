"""plan_cache_breakpoints: the 4-slot Anthropic priority, pure."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relaygate.agent import plan_cache_breakpoints

EPHEMERAL = {"type": "ephemeral"}


def _marks(request: dict[str, Any]) -> list[str]:
    found = [f"tool:{t['name']}" for t in request.get("tools", []) if "cache_control" in t]
    system = request.get("system")
    if isinstance(system, list):
        found += [f"system:{i}" for i, b in enumerate(system) if "cache_control" in b]
    for mi, message in enumerate(request.get("messages", [])):
        if isinstance(message["content"], list):
            found += [f"msg:{mi}:{bi}:{b['type']}" for bi, b in enumerate(message["content"]) if "cache_control" in b]
    return found


def _request() -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 100,
        "tools": [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}],
        "system": "You are helpful.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "doc " * 2000}, {"type": "text", "text": "question"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r1"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "a", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "r2"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t3", "name": "b", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t3", "content": "r3"}]},
        ],
    }


def test_priority_tools_system_large_user_content_latest_tool_result() -> None:
    request = _request()
    before = copy.deepcopy(request)
    planned = plan_cache_breakpoints(request)
    assert request == before  # pure
    assert _marks(planned) == ["tool:b", "system:0", "msg:0:0:text", "msg:6:0:tool_result"]
    assert planned["system"] == [{"type": "text", "text": "You are helpful.", "cache_control": EPHEMERAL}]


def test_remaining_slots_go_to_the_latest_tool_results() -> None:
    request = _request()
    del request["tools"]
    del request["system"]
    assert _marks(plan_cache_breakpoints(request)) == [
        "msg:0:0:text", "msg:2:0:tool_result", "msg:4:0:tool_result", "msg:6:0:tool_result",
    ]


def test_small_user_content_is_not_marked_and_threshold_is_configurable() -> None:
    request = _request()
    request["messages"][0]["content"][0]["text"] = "short"
    marks = _marks(plan_cache_breakpoints(request))
    assert "msg:0:0:text" not in marks and "msg:4:0:tool_result" in marks
    assert "msg:0:1:text" in _marks(plan_cache_breakpoints(request, large_tokens=1))


def test_existing_breakpoints_are_kept_and_counted() -> None:
    request = _request()
    request["tools"][0]["cache_control"] = EPHEMERAL
    request["messages"][2]["content"][0]["cache_control"] = EPHEMERAL
    request["messages"][4]["content"][0]["cache_control"] = EPHEMERAL
    planned = plan_cache_breakpoints(request)
    # Three were there; the one free slot goes to the system prompt (tools are already cached).
    assert _marks(planned) == ["tool:a", "system:0", "msg:2:0:tool_result", "msg:4:0:tool_result"]


def test_string_user_content_becomes_a_block_when_marked() -> None:
    request = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 8000}]}
    planned = plan_cache_breakpoints(request)
    assert planned["messages"][0]["content"] == [{"type": "text", "text": "x" * 8000, "cache_control": EPHEMERAL}]
    assert request["messages"][0]["content"] == "x" * 8000


@given(st.integers(0, 6), st.integers(0, 6), st.booleans(), st.integers(1, 4))
def test_never_more_than_the_allowed_number(tool_results: int, tools: int, system: bool, limit: int) -> None:
    messages: list[dict[str, Any]] = []
    for i in range(tool_results):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "a", "input": {}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "r"}]})
    request: dict[str, Any] = {"messages": messages, "tools": [{"name": f"n{i}"} for i in range(tools)]}
    if system:
        request["system"] = [{"type": "text", "text": "s"}]
    planned = plan_cache_breakpoints(request, max_breakpoints=limit)
    assert len(_marks(planned)) == min(limit, (tools > 0) + system + tool_results)
