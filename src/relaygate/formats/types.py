"""Provider-neutral chat types: every inbound format parses into these, every provider
adapter translates from them, and every stream is normalised into `StreamEvent`s.

Conventions:
- `Usage.input_tokens` is the whole prompt, cache reads and writes included (OpenAI's
  convention); adapters for providers that report them beside the prompt (Anthropic) add
  them in, so pricing has one rule.
- Stop reasons use Anthropic's vocabulary (`end_turn`, `max_tokens`, `stop_sequence`,
  `tool_use`, `content_filter`, `refusal`), the richer of the two.
- Tool results are content parts of a user message (Anthropic's shape); OpenAI's
  `role: tool` messages map onto them one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "content_filter", "refusal"]


@dataclass(slots=True)
class TextPart:
    text: str
    cache_control: dict[str, Any] | None = None
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image by URL or inline base64 `data` with its `media_type`."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    cache_control: dict[str, Any] | None = None
    type: Literal["image"] = "image"


@dataclass(slots=True)
class ToolCallPart:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it
    type: Literal["tool_call"] = "tool_call"


@dataclass(slots=True)
class ToolResultPart:
    tool_call_id: str
    content: list[TextPart | ImagePart]
    is_error: bool = False
    cache_control: dict[str, Any] | None = None
    type: Literal["tool_result"] = "tool_result"


@dataclass(slots=True)
class ReasoningPart:
    text: str
    signature: str | None = None
    type: Literal["reasoning"] = "reasoning"


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON schema
    cache_control: dict[str, Any] | None = None


ToolChoice = Literal["auto", "none", "required"] | str  # str other than those = a tool name


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: list[TextPart] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    stream: bool = False
    include_usage: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None  # OpenAI shape: {"type": "json_schema", ...}
    user: str | None = None
    # Parameters with no common meaning (seed, n, logprobs, thinking, ...), passed to
    # providers that speak the inbound format and dropped for the others.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    content: list[Part]
    stop_reason: StopReason | None
    usage: Usage
    created: int = 0
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.content if isinstance(p, ToolCallPart)]


# --- Stream events -----------------------------------------------------------------------
# A provider stream decodes into this sequence:
#   StreamStart, (TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta)*, StreamEnd
# `StreamEnd` carries the stop reason and the final usage; usage may also come earlier in
# `UsageDelta` events (Anthropic sends input tokens at the start), which encoders sum.


@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    usage: Usage | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str
    signature: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    index: int  # position among this response's tool calls, from 0
    id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str  # a fragment of the JSON arguments


@dataclass(slots=True)
class StreamEnd:
    stop_reason: StopReason | None
    usage: Usage | None = None
    stop_sequence: str | None = None


StreamEvent = StreamStart | TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta | StreamEnd


def collect_stream(events: list[StreamEvent]) -> ChatResponse:
    """Folds a whole event stream into the response it describes (cache, ledger, tests)."""
    rid, model = "", ""
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, ToolCallPart] = {}
    usage = Usage()
    stop: StopReason | None = None
    stop_seq: str | None = None
    for ev in events:
        if isinstance(ev, StreamStart):
            rid, model = ev.id, ev.model
            if ev.usage:
                usage = merge_usage(usage, ev.usage)
        elif isinstance(ev, TextDelta):
            text.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            reasoning.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            calls[ev.index] = ToolCallPart(ev.id, ev.name, "")
        elif isinstance(ev, ToolCallDelta):
            if ev.index in calls:
                calls[ev.index].arguments += ev.arguments
        elif isinstance(ev, StreamEnd):
            stop, stop_seq = ev.stop_reason, ev.stop_sequence
            if ev.usage:
                usage = merge_usage(usage, ev.usage)
    content: list[Part] = []
    if reasoning:
        content.append(ReasoningPart("".join(reasoning)))
    if text:
        content.append(TextPart("".join(text)))
    content.extend(calls[i] for i in sorted(calls))
    return ChatResponse(rid, model, content, stop, usage, stop_sequence=stop_seq)


def merge_usage(base: Usage, update: Usage) -> Usage:
    """Stream usage arrives in pieces; a later non-zero figure replaces an earlier one."""
    return Usage(
        input_tokens=update.input_tokens or base.input_tokens,
        output_tokens=update.output_tokens or base.output_tokens,
        cache_read_tokens=update.cache_read_tokens or base.cache_read_tokens,
        cache_write_tokens=update.cache_write_tokens or base.cache_write_tokens,
        reasoning_tokens=update.reasoning_tokens or base.reasoning_tokens,
    )
