"""Where to put Anthropic prompt-cache breakpoints (at most 4) in a Messages API request.

Priority, one slot each until the slots run out: the tool definitions (a breakpoint on the
last tool caches them all), the system prompt, the latest large user content (over
`large_tokens`), then the latest tool results, newest first. Breakpoints already in the
request are kept and count against the 4. Pure: returns a new dict, copying only what it
changes; the input is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_BREAKPOINTS = 4
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
_NOT_CACHEABLE = frozenset({"thinking", "redacted_thinking"})


def _default_tokens(block: Mapping[str, Any]) -> int:
    text = block.get("text")
    if isinstance(text, str):
        return len(text) // 4
    content = block.get("content")
    if isinstance(content, str):
        return len(content) // 4
    if isinstance(content, list):
        return sum(_default_tokens(part) for part in content if isinstance(part, Mapping))
    source = block.get("source")
    if isinstance(source, Mapping) and isinstance(source.get("data"), str):
        return len(source["data"]) // 4
    return 0


def _count_existing(request: Mapping[str, Any]) -> int:
    count = sum(1 for tool in request.get("tools") or [] if isinstance(tool, Mapping) and "cache_control" in tool)
    system = request.get("system")
    if isinstance(system, list):
        count += sum(1 for block in system if isinstance(block, Mapping) and "cache_control" in block)
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            count += sum(1 for block in content if isinstance(block, Mapping) and "cache_control" in block)
    return count


def plan_cache_breakpoints(
    request: Mapping[str, Any],
    *,
    large_tokens: int = 1024,
    max_breakpoints: int = MAX_BREAKPOINTS,
    count_tokens: Callable[[Mapping[str, Any]], int] = _default_tokens,
) -> dict[str, Any]:
    """A copy of `request` with `cache_control: {"type": "ephemeral"}` placed by priority."""
    out = dict(request)
    slots = max_breakpoints - _count_existing(request)
    if slots <= 0:
        return out

    tools = request.get("tools")
    if (
        slots
        and isinstance(tools, list)
        and tools
        and isinstance(tools[-1], Mapping)
        and not any(isinstance(t, Mapping) and "cache_control" in t for t in tools)
    ):
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": dict(EPHEMERAL)}]
        slots -= 1

    system = request.get("system")
    if slots and system:
        if isinstance(system, str):
            out["system"] = [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]
            slots -= 1
        elif (
            isinstance(system, list)
            and isinstance(system[-1], Mapping)
            and not any(isinstance(b, Mapping) and "cache_control" in b for b in system)
        ):
            out["system"] = [*system[:-1], {**system[-1], "cache_control": dict(EPHEMERAL)}]
            slots -= 1

    messages = request.get("messages")
    if not slots or not isinstance(messages, list):
        return out
    new_messages: list[Any] = list(messages)
    marked: set[tuple[int, int]] = set()

    def mark(mi: int, bi: int) -> None:
        message = new_messages[mi]
        content = message["content"]
        if isinstance(content, str):
            blocks: list[Any] = [{"type": "text", "text": content}]
        else:
            blocks = list(content)
        blocks[bi] = {**blocks[bi], "cache_control": dict(EPHEMERAL)}
        new_messages[mi] = {**message, "content": blocks}
        marked.add((mi, bi))

    def blocks_of(message: Any) -> list[Mapping[str, Any]]:
        if not isinstance(message, Mapping):
            return []
        content = message.get("content")
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        if isinstance(content, list):
            return [b if isinstance(b, Mapping) else {} for b in content]
        return []

    # Latest large user content (not tool results: those have their own priority).
    for mi in range(len(messages) - 1, -1, -1):
        if not slots:
            break
        if not isinstance(messages[mi], Mapping) or messages[mi].get("role") != "user":
            continue
        found = False
        for bi, block in reversed(list(enumerate(blocks_of(messages[mi])))):
            if block.get("type") in ("text", "image", "document") and "cache_control" not in block \
                    and count_tokens(block) >= large_tokens:
                mark(mi, bi)
                slots -= 1
                found = True
                break
        if found:
            break

    # Latest tool results, newest first, with whatever slots remain.
    for mi in range(len(messages) - 1, -1, -1):
        if not slots:
            break
        blocks = blocks_of(messages[mi])
        for bi in range(len(blocks) - 1, -1, -1):
            block = blocks[bi]
            if block.get("type") == "tool_result" and "cache_control" not in block and (mi, bi) not in marked:
                mark(mi, bi)
                slots -= 1
                break  # one per message: a breakpoint caches everything before it anyway

    out["messages"] = new_messages
    return out
