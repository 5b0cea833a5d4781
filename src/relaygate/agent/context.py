"""Keep a long agent conversation inside the context window.

The first `keep_first` messages (system prompt, the task) and the last `keep_last` stay
verbatim; everything between becomes one summary message written by an injected async
summariser. A tool call is never separated from its results: the cut points move so that an
assistant message with `tool_calls` and the `tool` messages answering it land on the same
side. Old tool results nobody refers to any more are shrunk to a stub first (the message
stays, because an API requires an answer for every tool call).

Messages are OpenAI chat-completions dicts (`role`, `content`, `tool_calls`, `tool_call_id`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

Message = dict[str, Any]
Summariser = Callable[[Sequence[Mapping[str, Any]]], Awaitable[str]]

PRUNED_STUB = "[tool result pruned to save context ({chars} characters); call the tool again if you need it]"


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) if isinstance(part, Mapping) else str(part) for part in content)
    return json.dumps(content, default=str)


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A cheap estimate (4 characters a token) for deciding when to compact."""
    chars = 0
    for message in messages:
        chars += len(_text(message.get("content"))) + 8
        for call in message.get("tool_calls") or []:
            chars += len(json.dumps(call, default=str))
    return chars // 4


def _call_ids(message: Mapping[str, Any]) -> list[str]:
    return [str(call.get("id")) for call in message.get("tool_calls") or [] if isinstance(call, Mapping)]


class ContextWindowManager:
    """First N + summary of the middle + last M, with tool calls kept whole."""

    def __init__(
        self,
        summariser: Summariser,
        *,
        keep_first: int = 2,
        keep_last: int = 12,
        trigger_tokens: int | None = None,
        keep_tool_results: int = 4,
        prune_min_chars: int = 2_000,
        summary_role: str = "system",
    ) -> None:
        """`trigger_tokens`: compact only above this estimate (None: whenever the conversation
        is longer than keep_first + keep_last). `keep_tool_results`: the most recent tool
        results are never pruned; older ones longer than `prune_min_chars` are, unless a later
        message mentions their tool_call_id."""
        self.summariser = summariser
        self.keep_first = keep_first
        self.keep_last = keep_last
        self.trigger_tokens = trigger_tokens
        self.keep_tool_results = keep_tool_results
        self.prune_min_chars = prune_min_chars
        self.summary_role = summary_role

    def prune_tool_results(self, messages: Sequence[Mapping[str, Any]]) -> list[Message]:
        """Shrink old, long, unreferenced tool results to a stub (a new list; input untouched)."""
        result = [dict(m) for m in messages]
        tool_positions = [i for i, m in enumerate(result) if m.get("role") == "tool"]
        protected = set(tool_positions[-self.keep_tool_results:]) if self.keep_tool_results else set()
        for index in tool_positions:
            message = result[index]
            content = _text(message.get("content"))
            if index in protected or len(content) < self.prune_min_chars:
                continue
            call_id = str(message.get("tool_call_id", ""))
            later = result[index + 1:]
            referenced = bool(call_id) and any(
                call_id in _text(m.get("content")) for m in later if m.get("role") != "tool"
            )
            if not referenced:
                message["content"] = PRUNED_STUB.format(chars=len(content))
        return result

    def _boundaries(self, messages: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """[0, head) is kept, [head, tail) is summarised, [tail, len) is kept."""
        count = len(messages)
        head = min(self.keep_first, count)
        # Extend the head over the results of any tool call it contains.
        while head < count and messages[head].get("role") == "tool":
            head += 1
        tail = max(head, count - self.keep_last)
        # Move the tail back so it does not start with results whose call is in the middle.
        while head < tail < count and messages[tail].get("role") == "tool":
            tail -= 1
        return head, tail

    def needs_compaction(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        """Whether `fit` would summarise anything."""
        if len(messages) <= self.keep_first + self.keep_last:
            return False
        return self.trigger_tokens is None or estimate_tokens(messages) > self.trigger_tokens

    async def fit(self, messages: Sequence[Mapping[str, Any]]) -> list[Message]:
        """The conversation to send next: pruned, and compacted when it is too long."""
        pruned = self.prune_tool_results(messages)
        if not self.needs_compaction(pruned):
            return pruned
        head, tail = self._boundaries(pruned)
        middle = pruned[head:tail]
        if not middle:
            return pruned
        summary = await self.summariser(middle)
        note: Message = {
            "role": self.summary_role,
            "content": f"[Summary of {len(middle)} earlier messages, replaced to save context]\n{summary.strip()}",
        }
        return [*pruned[:head], note, *pruned[tail:]]


_SUMMARY_PROMPT = (
    "Summarise this part of an agent's conversation for the agent itself. Keep: the user's "
    "requests and constraints, decisions made, facts and numbers learned from tools, files "
    "created, errors and how they were resolved, and what is still open. Be concise; no preamble."
)


def render_transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """Messages as plain text for a summariser (tool calls and results included)."""
    lines = []
    for message in messages:
        role = str(message.get("role", "?"))
        text = _text(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            text += f"\n[calls {function.get('name')}({function.get('arguments')})]"
        lines.append(f"{role}: {text}".strip())
    return "\n\n".join(lines)


class OpenAISummariser:
    """A `Summariser` that asks a model through an OpenAI-compatible endpoint (e.g. relaygate)."""

    def __init__(self, client: Any, model: str, *, max_tokens: int = 800, prompt: str = _SUMMARY_PROMPT) -> None:
        """`client` is an `openai.AsyncOpenAI` (pointed at the gateway with `base_url`)."""
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.prompt = prompt

    async def __call__(self, messages: Sequence[Mapping[str, Any]]) -> str:
        response = await self.client.chat.completions.create(
            model=self.model,
            max_tokens=self.max_tokens,
            messages=[
                {"role": "system", "content": self.prompt},
                {"role": "user", "content": render_transcript(messages)},
            ],
        )
        return str(response.choices[0].message.content or "")
