"""The OpenAI and Anthropic codecs: parsing, serialising, and streams, both directions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaygate.errors import GatewayError, UpstreamError
from relaygate.formats import anthropic, openai
from relaygate.formats.sse import SSEParser
from relaygate.formats.types import (
    ChatResponse,
    ImagePart,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
    collect_stream,
)
from tests.openapi_spec import validate

OPENAI_TOOLS_CONVERSATION = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                                                 "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "max_tokens": 50,
    "temperature": 0.5,
    "stop": "END",
    "seed": 7,
}


def test_openai_request_parses_every_part() -> None:
    req = openai.parse_request(OPENAI_TOOLS_CONVERSATION)
    assert [p.text for p in req.system] == ["be brief"]
    assert isinstance(req.messages[0].content[1], ImagePart)
    assert req.messages[0].content[1].media_type == "image/png"
    calls = req.messages[1].content
    assert [c.arguments for c in calls if isinstance(c, ToolCallPart)] == ['{"city":"Paris"}', '{"city":"Rome"}']
    results = req.messages[2].content  # both tool messages fold into one user turn
    assert [r.tool_call_id for r in results if isinstance(r, ToolResultPart)] == ["c1", "c2"]
    assert req.stop == ["END"] and req.tool_choice == "required" and req.extra == {"seed": 7}


def test_openai_request_round_trips_through_the_common_types() -> None:
    req = openai.parse_request(OPENAI_TOOLS_CONVERSATION)
    body = openai.dump_request(req, "m")
    again = openai.parse_request(body)
    assert again.messages == req.messages and again.system == req.system and again.tools == req.tools
    validate("CreateChatCompletionRequest", body)


def test_openai_to_anthropic_keeps_tools_images_and_results() -> None:
    body = anthropic.dump_request(openai.parse_request(OPENAI_TOOLS_CONVERSATION), "claude")
    assert body["system"] == [{"type": "text", "text": "be brief"}]
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["END"]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"]  # strict alternation: tool results + 'thanks' merged
    assert body["messages"][0]["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    uses = body["messages"][1]["content"]
    assert [u["input"] for u in uses] == [{"city": "Paris"}, {"city": "Rome"}]
    last = body["messages"][2]["content"]
    assert [b["type"] for b in last] == ["tool_result", "tool_result", "text"]


def test_anthropic_requires_max_tokens() -> None:
    with pytest.raises(GatewayError) as err:
        anthropic.parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert err.value.status == 400 and err.value.param == "max_tokens"


def test_anthropic_request_to_openai_and_back() -> None:
    body = {
        "model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42", "is_error": True}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
    }
    req = anthropic.parse_request(body)
    assert req.system[0].cache_control == {"type": "ephemeral"}
    oai = openai.dump_request(req, "gpt")
    assert oai["messages"][0] == {"role": "system", "content": "sys"}
    assert oai["messages"][2]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert oai["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "42"}
    assert oai["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert oai["parallel_tool_calls"] is False
    back = anthropic.dump_request(openai.parse_request(oai), "m")
    assert back["messages"][1]["content"][1]["input"] == {"a": 1}


def test_anthropic_rejects_json_schema_with_a_clear_400() -> None:
    req = openai.parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}})
    with pytest.raises(GatewayError) as err:
        anthropic.dump_request(req, "claude")
    assert err.value.status == 400 and err.value.param == "response_format"


def test_usage_conventions_are_normalised() -> None:
    # Anthropic reports cache tokens beside input; ours include them (OpenAI's convention).
    u = anthropic.parse_usage({"input_tokens": 5000, "cache_read_input_tokens": 15000,
                               "cache_creation_input_tokens": 0, "output_tokens": 300})
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (20000, 15000, 300)
    assert anthropic.dump_usage(u)["input_tokens"] == 5000
    o = openai.parse_usage({"prompt_tokens": 20000, "completion_tokens": 300,
                            "prompt_tokens_details": {"cached_tokens": 15000},
                            "completion_tokens_details": {"reasoning_tokens": 100}})
    assert (o.input_tokens, o.cache_read_tokens, o.reasoning_tokens) == (20000, 15000, 100)


def _response() -> ChatResponse:
    return ChatResponse("r1", "m", [TextPart("hello"), ToolCallPart("c1", "f", '{"a":1}')], "tool_use",
                        Usage(10, 5, 4, 0, 0), created=1)


def test_openai_response_matches_the_published_schema() -> None:
    body = openai.dump_response(_response(), "m")
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert openai.parse_response(body).content == _response().content


def test_anthropic_response_round_trip() -> None:
    body = anthropic.dump_response(_response(), "m")
    assert body["stop_reason"] == "tool_use"
    assert body["usage"] == {"input_tokens": 6, "output_tokens": 5, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 4}
    back = anthropic.parse_response(body)
    assert back.usage == _response().usage and back.tool_calls == _response().tool_calls


EVENTS = [
    StreamStart("r1", "m", Usage(10, 0)),
    TextDelta("hel"), TextDelta("lo"),
    ToolCallStart(0, "c1", "f"), ToolCallDelta(0, '{"a"'), ToolCallDelta(0, ":1}"),
    ToolCallStart(1, "c2", "g"), ToolCallDelta(1, "{}"),
    StreamEnd("tool_use", Usage(10, 7)),
]


@pytest.mark.parametrize("codec", ["openai", "anthropic"])
def test_stream_encode_then_decode_is_lossless(codec: str) -> None:
    enc: openai.StreamEncoder | anthropic.StreamEncoder
    dec: openai.StreamDecoder | anthropic.StreamDecoder
    if codec == "openai":
        enc, dec = openai.StreamEncoder("m", True, "r1"), openai.StreamDecoder()
    else:
        enc, dec = anthropic.StreamEncoder("m", "r1"), anthropic.StreamDecoder()
    wire = b"".join(enc.encode(e) for e in EVENTS) + enc.close()
    events = dec.feed(wire) + dec.close()
    got, want = collect_stream(events), collect_stream(EVENTS)
    assert got.content == want.content and got.stop_reason == "tool_use"
    assert got.usage.output_tokens == 7 and got.usage.input_tokens == 10


def test_openai_stream_chunks_match_the_published_schema() -> None:
    enc = openai.StreamEncoder("m", True, "r1")
    for ev in EVENTS:
        for sse in SSEParser().feed(enc.encode(ev)):
            validate("CreateChatCompletionStreamResponse", orjson.loads(sse.data))


def test_truncated_streams_are_errors_not_silent_ends() -> None:
    dec = openai.StreamDecoder()
    dec.feed(b'data: {"id":"x","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
    with pytest.raises(UpstreamError):
        dec.close()
    adec = anthropic.StreamDecoder()
    adec.feed(b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"x","usage":{}}}\n\n')
    with pytest.raises(UpstreamError):
        adec.close()


def test_anthropic_stream_error_event_becomes_an_upstream_error() -> None:
    dec = anthropic.StreamDecoder()
    with pytest.raises(UpstreamError) as err:
        dec.feed(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n')
    assert err.value.status == 529


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_sse_parser_is_indifferent_to_chunk_boundaries(cuts: list[int]) -> None:
    enc = anthropic.StreamEncoder("m", "r1")
    wire = b"".join(enc.encode(e) for e in EVENTS) + enc.close()
    whole = [(e.event, e.data) for e in SSEParser().feed(wire)]
    parser, pos, pieces = SSEParser(), 0, []
    for cut in cuts:
        pieces.extend(parser.feed(wire[pos:pos + cut]))
        pos += cut
    pieces.extend(parser.feed(wire[pos:]))
    assert [(e.event, e.data) for e in pieces] == whole


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=60))
def test_sse_parser_keeps_crlf_lines_and_multibyte_text_split_anywhere(cuts: list[int]) -> None:
    wire = ('event: delta\r\ndata: {"t":"h\u00e9llo \u4e16\u754c \U0001f600"}\r\n\r\n'
            ': a comment\r\ndata: line one\r\ndata: line two\r\n\r\n').encode()
    want = [("delta", '{"t":"h\u00e9llo \u4e16\u754c \U0001f600"}'), (None, "line one\nline two")]
    parser, pos, got = SSEParser(), 0, []
    for cut in cuts:
        got.extend(parser.feed(wire[pos:pos + cut]))
        pos += cut
    got.extend(parser.feed(wire[pos:]))
    got.extend(parser.close())
    assert [(e.event, e.data) for e in got] == want


# An upstream's own stream, as api.openai.com sends it with include_usage: every chunk has
# "usage": null, then a usage-only chunk with empty choices.
UPSTREAM_STREAM = b"".join(
    b"data: " + orjson.dumps({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                              "system_fingerprint": "fp_1", "choices": choices, "usage": usage}) + b"\n\n"
    for choices, usage in [
        ([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None}], None),
        ([{"index": 0, "delta": {"content": "Bon"}, "finish_reason": None}], None),
        ([{"index": 0, "delta": {"content": "jour \u00e9t\u00e9"}, "finish_reason": None}], None),
        ([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                                 "function": {"name": "f", "arguments": ""}}]},
           "finish_reason": None}], None),
        ([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]},
           "finish_reason": None}], None),
        ([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], None),
        ([], {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}),
    ]
)
USAGE_CHUNK_START = UPSTREAM_STREAM.rindex(b"data: ")


@pytest.mark.parametrize("include_usage", [True, False])
def test_passthrough_relays_the_upstream_bytes_less_done_and_unasked_usage(include_usage: bool) -> None:
    dec = openai.StreamPassthrough(include_usage)
    events = dec.feed(UPSTREAM_STREAM + b"data: [DONE]\n\n")
    relayed = dec.take()
    assert relayed == (UPSTREAM_STREAM if include_usage else UPSTREAM_STREAM[:USAGE_CHUNK_START])
    assert dec.take() == b""  # taken once
    got = collect_stream(events + dec.close())
    assert got.id == "chatcmpl-up" and got.model == "gpt-x" and got.text == "Bonjour \u00e9t\u00e9"
    assert got.tool_calls == [ToolCallPart("c1", "f", '{"a":1}')] and got.stop_reason == "tool_use"
    assert (got.usage.input_tokens, got.usage.output_tokens) == (12, 5)


def feed_in_pieces(dec: openai.StreamPassthrough | anthropic.StreamPassthrough, wire: bytes,
                   cuts: list[int]) -> tuple[list[StreamEvent], bytes]:
    """The events and the relayed bytes of `wire` fed in reads of the given sizes."""
    pos, events, relayed = 0, [], b""
    for cut in cuts:
        events += dec.feed(wire[pos:pos + cut])
        relayed += dec.take()
        pos += cut
    events += dec.feed(wire[pos:]) + dec.close()
    return events, relayed + dec.take()


@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40))
def test_passthrough_is_indifferent_to_read_boundaries(cuts: list[int]) -> None:
    wire = UPSTREAM_STREAM + b"data: [DONE]\n\n"
    events, relayed = feed_in_pieces(openai.StreamPassthrough(True), wire, cuts)
    assert relayed == UPSTREAM_STREAM
    assert collect_stream(events) == collect_stream(openai.StreamDecoder().feed(wire))


def test_passthrough_ends_at_eof_after_a_finish_and_refuses_a_cut_or_broken_stream() -> None:
    no_done = openai.StreamPassthrough(True)
    no_done.feed(UPSTREAM_STREAM)
    assert isinstance(no_done.close()[-1], StreamEnd)
    cut = openai.StreamPassthrough(True)
    cut.feed(UPSTREAM_STREAM[:UPSTREAM_STREAM.index(b"data: ", 300)])
    with pytest.raises(UpstreamError, match="ended before it finished"):
        cut.close()
    for bad in (b'data: {"id": \n\n', b"data: [1, 2]\n\n"):  # not JSON; JSON but not a chunk
        with pytest.raises(UpstreamError, match="malformed"):
            openai.StreamPassthrough(True).feed(bad)
        with pytest.raises(UpstreamError, match="malformed"):
            openai.StreamDecoder().feed(bad)
    with pytest.raises(UpstreamError, match="overloaded") as err:
        openai.StreamPassthrough(True).feed(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n')
    assert err.value.error_type == "server_error"



@pytest.mark.parametrize("bad", [b'{"id": ', b"[1, 2]", b"null", b'{"a": 1}, {"b": 2}', b"1, 2", b""])
def test_passthrough_checks_each_chunk_of_a_read_parsed_in_one_call(bad: bytes) -> None:
    """Several chunks of one read are parsed together; one that is not a single chunk object
    still fails the stream (502), wherever it stands in the read, and nothing before it is lost."""
    good = b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
    for wire in (good + b"data: " + bad + b"\n\n" + good, b"data: " + bad + b"\n\n" + good + b"data: [DONE]\n\n"):
        dec = openai.StreamPassthrough(True)
        with pytest.raises(UpstreamError, match="malformed"):
            dec.feed(wire)
    whole = openai.StreamPassthrough(True)
    events = whole.feed(good * 3 + b'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, '
                        b'"finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
    assert [type(e).__name__ for e in events] == ["StreamStart", "TextDelta", "StreamEnd"]
    assert events[1].text == "HiHiHi" and whole.take().count(b"data: ") == 4
    with pytest.raises(UpstreamError, match="overloaded"):
        openai.StreamPassthrough(True).feed(good + b'data: {"error": {"message": "overloaded"}}\n\n' + good)


@pytest.mark.parametrize("make", [openai.StreamDecoder, lambda: openai.StreamPassthrough(True)])
def test_stream_chunks_are_read_by_their_schema(make: Any) -> None:
    """Chunks are decoded into the fields the gateway reads: unknown fields are ignored
    (and still relayed byte for byte), a numeric string where a number belongs is taken,
    a known field of the wrong type fails the stream naming where, and an error chunk's
    error may be an object or a bare string."""
    chunk = (b'{"id":"c1","model":"m","system_fingerprint":"fp","obfuscation":"x1",'
             b'"choices":[{"index":0,"logprobs":null,"delta":{"role":"assistant","content":"Hi","refusal":null,'
             b'"tool_calls":[{"index":"1","id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},'
             b'"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":"4"}}')
    dec = make()
    events = dec.feed(b"data: " + chunk + b"\n\ndata: " + chunk + b"\n\ndata: [DONE]\n\n")
    assert [type(e).__name__ for e in events] == [
        "StreamStart", "TextDelta", "ToolCallStart", "ToolCallDelta", "TextDelta", "ToolCallDelta", "StreamEnd"]
    assert events[2].index == 1 and events[2].name == "f" and events[-1].stop_reason == "tool_use"
    assert events[-1].usage.input_tokens == 3 and events[-1].usage.output_tokens == 4
    if isinstance(dec, openai.StreamPassthrough):
        assert dec.take() == b"data: " + chunk + b"\n\ndata: " + chunk + b"\n\n"
    for wrong, where in [(b'"content":["a"]', "delta.content"), (b'"content":"a","tool_calls":{}', "tool_calls"),
                         (b'"content":"a","tool_calls":[{"index":"x"}]', "index")]:
        bad = b'{"id":"c1","choices":[{"delta":{' + wrong + b"}}]}"
        for wire in (b"data: " + bad + b"\n\n", b'data: {"id":"c1","choices":[]}\n\ndata: ' + bad + b"\n\n"):
            with pytest.raises(UpstreamError, match=f"malformed stream chunk.*{where}"):
                make().feed(wire)
    with pytest.raises(UpstreamError, match="slow down"):
        make().feed(b'data: {"error": "slow down"}\n\n')
    with pytest.raises(UpstreamError, match="upstream stream error"):
        make().feed(b'data: {"error": null}\n\n')

def _anthropic_event(payload: dict[str, object]) -> bytes:
    return b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# An upstream's own Anthropic stream: a ping, text, then a tool call, usage at both ends.
ANTHROPIC_UPSTREAM = b"".join(_anthropic_event(p) for p in [
    {"type": "message_start", "message": {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-x",
                                          "content": [], "stop_reason": None, "usage": {"input_tokens": 12,
                                                                                        "output_tokens": 1}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bonjour \u00e9t\u00e9"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f",
                                                                  "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 9}},
])
ANTHROPIC_STOP = _anthropic_event({"type": "message_stop"})


@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40))
def test_anthropic_passthrough_relays_the_upstream_events_less_message_stop(cuts: list[int]) -> None:
    wire = ANTHROPIC_UPSTREAM + ANTHROPIC_STOP
    events, relayed = feed_in_pieces(anthropic.StreamPassthrough(), wire, cuts)
    assert relayed == ANTHROPIC_UPSTREAM  # message_stop is the relay's, after its cost comment
    got = collect_stream(events)
    assert got == collect_stream(anthropic.StreamDecoder().feed(wire))
    assert got.id == "msg_up" and got.text == "Bonjour \u00e9t\u00e9" and got.stop_reason == "tool_use"
    assert got.tool_calls == [ToolCallPart("t1", "f", '{"a":1}')]
    assert (got.usage.input_tokens, got.usage.output_tokens) == (12, 9)


def test_anthropic_passthrough_refuses_a_cut_or_failed_stream() -> None:
    cut = anthropic.StreamPassthrough()
    cut.feed(ANTHROPIC_UPSTREAM)
    with pytest.raises(UpstreamError, match="before message_stop"):
        cut.close()
    failed = anthropic.StreamPassthrough()
    with pytest.raises(UpstreamError) as err:
        failed.feed(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n')
    assert err.value.status == 529 and failed.take() == b""
    multi = anthropic.StreamPassthrough()  # data over two lines keeps its two lines
    multi.feed(b'event: ping\ndata: {"type":\ndata: "ping"}\n\n')
    assert multi.take() == b'event: ping\ndata: {"type":\ndata: "ping"}\n\n'
