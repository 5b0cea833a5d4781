from __future__ import annotations

import math
from typing import Any

import httpx
import orjson
from anthropic import Anthropic

from relaygate.mock_upstream.faults import FaultConfig
from relaygate.mock_upstream.prompt_cache import CacheBlock, CacheUsage, PromptCacheMemory
from relaygate.mock_upstream.server import MockUpstreamThread


def _blocks(*spec: tuple[str, int, bool]) -> list[CacheBlock]:
    return [CacheBlock(name.encode(), tokens, bp) for name, tokens, bp in spec]


def test_no_breakpoint_means_no_caching() -> None:
    memory = PromptCacheMemory()
    blocks = _blocks(("a", 10, False), ("b", 5, False))
    assert memory.account("s", blocks) == CacheUsage(0, 0, 15)
    assert memory.account("s", blocks) == CacheUsage(0, 0, 15)


def test_read_write_split_and_scopes() -> None:
    memory = PromptCacheMemory()
    blocks = _blocks(("tools", 100, True), ("system", 50, True), ("user", 7, False))
    assert memory.account("k1", blocks) == CacheUsage(0, 150, 7)
    assert memory.account("k1", blocks) == CacheUsage(150, 0, 7)
    assert memory.account("k2", blocks) == CacheUsage(0, 150, 7)
    changed = _blocks(("tools", 100, True), ("system2", 60, True), ("user", 7, False))
    assert memory.account("k1", changed) == CacheUsage(100, 60, 7)
    memory.reset()
    assert memory.account("k1", blocks) == CacheUsage(0, 150, 7)


def test_moving_breakpoint_reads_previous_turn_via_lookback() -> None:
    memory = PromptCacheMemory()
    turn1 = _blocks(("sys", 100, False), ("u1", 10, True))
    assert memory.account("k", turn1) == CacheUsage(0, 110, 0)
    turn2 = _blocks(("sys", 100, False), ("u1", 10, False), ("a1", 20, False), ("u2", 5, True))
    assert memory.account("k", turn2) == CacheUsage(110, 25, 0)


def test_lookback_is_limited_to_twenty_blocks() -> None:
    memory = PromptCacheMemory()
    memory.account("k", _blocks(("p", 10, True)))
    far = _blocks(("p", 10, False), *((f"m{i}", 1, False) for i in range(25)), ("last", 1, True))
    assert memory.account("k", far).read == 0


def test_min_tokens_skips_short_prefixes() -> None:
    memory = PromptCacheMemory()
    blocks = _blocks(("small", 10, True), ("big", 2000, True), ("q", 3, False))
    assert memory.account("k", blocks, min_tokens=1024) == CacheUsage(0, 2010, 3)
    small_only = _blocks(("small", 10, True), ("q", 3, False))
    assert memory.account("k", small_only, min_tokens=1024) == CacheUsage(0, 0, 13)


def _tokens(block: dict[str, Any]) -> int:
    return math.ceil(len(orjson.dumps(block)) / 4)


def test_agent_conversation_with_breakpoint_on_latest_message(upstream_url: str) -> None:
    client = Anthropic(base_url=upstream_url, api_key="sk-agent-loop", max_retries=0)
    system = "Agent rules. " * 100
    marked = {"type": "ephemeral"}
    turn1 = [{"role": "user", "content": [{"type": "text", "text": "step one", "cache_control": marked}]}]
    u1 = client.messages.create(model="m", max_tokens=20, system=system, messages=turn1).usage  # type: ignore[arg-type]
    prefix1 = _tokens({"type": "text", "text": system}) + _tokens({"type": "text", "text": "step one"})
    assert (u1.cache_creation_input_tokens, u1.cache_read_input_tokens, u1.input_tokens) == (prefix1, 0, 0)
    turn2 = [
        {"role": "user", "content": [{"type": "text", "text": "step one"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "done one"}]},
        {"role": "user", "content": [{"type": "text", "text": "step two", "cache_control": marked}]},
    ]
    u2 = client.messages.create(model="m", max_tokens=20, system=system, messages=turn2).usage  # type: ignore[arg-type]
    assert u2.cache_read_input_tokens == prefix1
    assert u2.cache_creation_input_tokens == _tokens({"type": "text", "text": "done one"}) + _tokens(
        {"type": "text", "text": "step two"})
    assert u2.input_tokens == 0


def test_more_than_four_breakpoints_is_400(upstream_url: str) -> None:
    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    body = {"model": "m", "max_tokens": 5, "system": [block] * 3, "messages": [{"role": "user", "content": [block] * 2}]}
    r = httpx.post(upstream_url + "/v1/messages", json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400
    assert "maximum of 4" in r.json()["error"]["message"]


def test_cache_min_tokens_setting_applies_to_anthropic() -> None:
    with MockUpstreamThread(FaultConfig(cache_min_tokens=1024)) as upstream:
        client = Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
        system: Any = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
        for _ in range(2):
            usage = client.messages.create(model="m", max_tokens=5, system=system,
                                           messages=[{"role": "user", "content": "hi"}]).usage
            assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
