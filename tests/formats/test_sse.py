"""The SSE parser's two readings of the same bytes agree: `feed` (events) and
`feed_data` (payloads only, with a fast path for streams of one-line `data:` events),
whatever the events and wherever the network splits them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relaygate.formats.sse import SSEParser

EVENTS = [b"data: a\n\n", b'data: {"x":1}\n\n', b"event: e\ndata: b\n\n", b": comment\n\n",
          b"data: x\ndata: y\n\n", b"data:nospace\n\n", b"data: [DONE]\n\n", b"data: a\r\n\r\n", b"event: only\n\n",
          b"\n", b"data: z\n\n\n"]


@settings(max_examples=400)
@given(st.lists(st.sampled_from(EVENTS), min_size=1, max_size=12), st.lists(st.integers(0, 400), max_size=4))
def test_payloads_equal_event_data_however_split(events: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(events)
    points = sorted({c % len(stream) for c in cuts} - {0})
    pieces = [stream[i:j] for i, j in zip([0, *points], [*points, len(stream)], strict=True)]
    fast, slow = SSEParser(), SSEParser()
    payloads = [d for piece in pieces for d in fast.feed_data(piece)]
    data = [e.data.encode() for piece in pieces for e in slow.feed(piece) if e.data]
    assert payloads == data


def test_fast_path_payloads() -> None:
    assert SSEParser().feed_data(b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\ndata: par") == [b"1", b"2", b"[DONE]"]
