"""Stream decoders must not care where the network splits the bytes: any split of a
recorded stream decodes to the same answer (SSE for OpenAI/Anthropic/Gemini/Azure, AWS
event-stream frames for Bedrock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaygate.formats.types import StreamEvent, collect_stream
from tests.providers.fidelity import PROVIDERS, adapter, recorded

FILES = {p: ("stream_tools.bin" if p.startswith("bedrock") else "stream_tools.sse") for p in PROVIDERS}


def decode(provider: str, data: bytes, cuts: list[int]) -> list[StreamEvent]:
    a, _ = adapter(provider)
    decoder = a.stream_decoder()
    events: list[StreamEvent] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        events.extend(decoder.feed(data[start:end]))
    events.extend(decoder.close())
    return events


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=40, deadline=None)
@given(fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=12))
def test_any_split_gives_the_same_answer(provider: str, fractions: list[float]) -> None:
    data = recorded(provider, FILES[provider])
    whole = collect_stream(decode(provider, data, []))
    split = collect_stream(decode(provider, data, [int(f * len(data)) for f in fractions]))
    assert (split.text, split.stop_reason, split.usage) == (whole.text, whole.stop_reason, whole.usage)
    assert [(c.name, c.arguments) for c in split.tool_calls] == [(c.name, c.arguments) for c in whole.tool_calls]
    assert len(whole.tool_calls) == 2 and whole.text == "Let me check."
