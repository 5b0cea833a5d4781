"""Deterministic replies shared by the built-in `mock` provider and `relaygate mock-upstream`.

The reply depends only on the request, so tests can predict it:
- `CALL_TOOL <name> <json-args>` lines in the last user message (when tools are offered)
  become tool calls, one per line, in order;
- `REPLY_WORDS <n>` asks for an n-word answer (cut at `max_tokens`, then the stop
  reason is `max_tokens`);
- otherwise the answer is `mock reply: <last user text, first 200 chars>`.
Token counts are a ceil(chars / 4) estimate, so the same text always costs the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_CALL_TOOL = re.compile(r"CALL_TOOL\s+(\S+)\s+(\{.*\})\s*$", re.MULTILINE)
_REPLY_WORDS = re.compile(r"REPLY_WORDS\s+(\d+)")


@dataclass(frozen=True, slots=True)
class MockToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class MockReply:
    text: str
    tool_calls: tuple[MockToolCall, ...] = field(default_factory=tuple)
    stop_reason: str = "end_turn"  # end_turn | max_tokens | tool_use
    input_tokens: int = 0
    output_tokens: int = 0


def count_tokens(text: str) -> int:
    """The mock's token count: ceil(chars / 4), at least 1 for non-empty text."""
    return math.ceil(len(text) / 4) if text else 0


def reply_for(
    last_user_text: str,
    prompt_chars: int,
    tools_offered: bool,
    max_tokens: int | None,
    call_seq: int = 0,
) -> MockReply:
    """Computes the mock answer for a request, given its last user text and its size."""
    input_tokens = max(1, math.ceil(prompt_chars / 4))
    if tools_offered:
        calls = tuple(
            MockToolCall(id=f"call_mock_{call_seq}_{i}", name=m.group(1), arguments=m.group(2))
            for i, m in enumerate(_CALL_TOOL.finditer(last_user_text))
        )
        if calls:
            out = sum(count_tokens(c.name) + count_tokens(c.arguments) for c in calls)
            return MockReply("", calls, "tool_use", input_tokens, max(1, out))
    words_match = _REPLY_WORDS.search(last_user_text)
    if words_match:
        n = int(words_match.group(1))
        words = [f"w{i % 10}" for i in range(n)]  # 'w0 ' is 3 chars ~ one token each
        stop = "end_turn"
        if max_tokens is not None and n > max_tokens:
            words = words[:max_tokens]
            stop = "max_tokens"
        return MockReply(" ".join(words), (), stop, input_tokens, len(words))
    text = "mock reply: " + last_user_text[:200]
    out_tokens = count_tokens(text)
    stop = "end_turn"
    if max_tokens is not None and out_tokens > max_tokens:
        text = text[: max_tokens * 4]
        out_tokens = max_tokens
        stop = "max_tokens"
    return MockReply(text, (), stop, input_tokens, out_tokens)


def split_chunks(text: str, size: int = 16) -> list[str]:
    """Splits text into stream deltas of about `size` characters (word boundaries kept)."""
    if not text:
        return []
    chunks: list[str] = []
    current = ""
    for word in re.split(r"(\s+)", text):
        current += word
        if len(current) >= size:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return chunks
