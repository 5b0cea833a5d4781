"""The pre-call input-token estimate.

No tokenizer that ships its vocabulary works offline here (tiktoken downloads its BPE
files at run time), so the estimate is a calibrated heuristic: characters / 4 (OpenAI's
own rule of thumb for English, and exactly what the built-in mock provider reports), plus
OpenAI's per-message framing overhead and a flat cost per image. The estimate's error
against the provider's reported usage is tracked in the metric
`relaygate_limits_input_estimate_ratio` (estimate / actual) so the ratio can be tuned with
`limits.chars_per_token`."""

from __future__ import annotations

import math

import orjson

from relaygate.formats.types import (
    ChatRequest,
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

IMAGE_TOKENS = 800  # between OpenAI's low (85) and a 1024x1024 high-detail (765+) image
MESSAGE_OVERHEAD = 3


def input_tokens(chat: ChatRequest, chars_per_token: float = 4.0) -> int:
    chars = sum(len(p.text) for p in chat.system)
    images = 0
    for m in chat.messages:
        for p in m.content:
            if isinstance(p, (TextPart, ReasoningPart)):
                chars += len(p.text)
            elif isinstance(p, ToolCallPart):
                chars += len(p.name) + len(p.arguments)
            elif isinstance(p, ToolResultPart):
                for c in p.content:
                    if isinstance(c, TextPart):
                        chars += len(c.text)
                    else:
                        images += 1
            elif isinstance(p, ImagePart):
                images += 1
    for tool in chat.tools or ():
        chars += len(tool.name) + len(tool.description or "") + len(orjson.dumps(tool.parameters))
    overhead = MESSAGE_OVERHEAD * (len(chat.messages) + 1)
    return math.ceil(chars / chars_per_token) + images * IMAGE_TOKENS + overhead


def output_tokens(text_chars: int, chars_per_token: float = 4.0) -> int:
    """What an answer cut short cost, from the characters that were sent."""
    return math.ceil(text_chars / chars_per_token)
