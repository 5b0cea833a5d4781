from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError

from relaygate.mock_upstream import eventstream

MODEL = "us.anthropic.claude-sonnet-4-5-v1:0"
SIGV4 = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDRAW/20260101/us-east-1/bedrock/aws4_request, "
                          "SignedHeaders=host, Signature=abc"}


@pytest.fixture
def bedrock(upstream_url: str) -> Iterator[Any]:
    session = botocore.session.get_session()
    client = session.create_client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=upstream_url,
        aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    yield client
    client.close()


def _decode(raw: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(message.headers, message.payload) for message in buffer]


def test_encoder_round_trips_through_botocore_parser() -> None:
    raw = eventstream.event("messageStart", b'{"role":"assistant"}') + eventstream.exception(
        "throttlingException", b'{"message":"slow down"}')
    messages = _decode(raw)
    assert messages[0] == ({":event-type": "messageStart", ":content-type": "application/json",
                            ":message-type": "event"}, b'{"role":"assistant"}')
    assert messages[1][0][":exception-type"] == "throttlingException"


def test_converse_json(bedrock: Any) -> None:
    r = bedrock.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hello"}]}],
                         inferenceConfig={"maxTokens": 100})
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": "mock reply: hello"}]}
    assert r["stopReason"] == "end_turn"
    usage = r["usage"]
    assert usage["outputTokens"] == math.ceil(len("mock reply: hello") / 4)
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert r["metrics"]["latencyMs"] >= 1


def test_converse_stream_raw_frames_decode(upstream_url: str) -> None:
    r = httpx.post(upstream_url + f"/model/{MODEL}/converse-stream", headers=SIGV4,
                   json={"messages": [{"role": "user", "content": [{"text": "REPLY_WORDS 20"}]}]})
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    messages = _decode(r.content)
    types = [h[":event-type"] for h, _ in messages]
    assert types[0] == "messageStart" and types[-2:] == ["messageStop", "metadata"]
    text = "".join(json.loads(p)["delta"]["text"] for h, p in messages if h[":event-type"] == "contentBlockDelta")
    assert text == " ".join(f"w{i % 10}" for i in range(20))


def test_converse_stream_tool_use_through_botocore(bedrock: Any) -> None:
    r = bedrock.converse_stream(
        modelId=MODEL,
        messages=[{"role": "user", "content": [{"text": 'CALL_TOOL search {"query": "bedrock event streams"}'}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "search", "inputSchema": {"json": {"type": "object"}}}}]},
    )
    events = list(r["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "search"
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"query": "bedrock event streams"}
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}
    usage = events[-1]["metadata"]["usage"]
    assert set(usage) >= {"inputTokens", "outputTokens", "totalTokens", "cacheReadInputTokens",
                          "cacheWriteInputTokens"}


def test_converse_cache_points(upstream_url: str) -> None:
    session = botocore.session.get_session()
    client = session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=upstream_url,
                                   aws_access_key_id="AKIDCACHE", aws_secret_access_key="s")
    system = [{"text": "Long policy. " * 200}, {"cachePoint": {"type": "default"}}]

    def usage(question: str) -> dict[str, int]:
        return client.converse(modelId=MODEL, system=system,  # type: ignore[no-any-return]
                               messages=[{"role": "user", "content": [{"text": question}]}])["usage"]

    first, second = usage("a"), usage("b")
    prefix = math.ceil(len(json.dumps({"text": "Long policy. " * 200}, separators=(",", ":"))) / 4)
    assert (first["cacheWriteInputTokens"], first["cacheReadInputTokens"]) == (prefix, 0)
    assert (second["cacheWriteInputTokens"], second["cacheReadInputTokens"]) == (0, prefix)
    assert second["inputTokens"] == first["inputTokens"]  # only the uncached question
    assert second["totalTokens"] == prefix + second["inputTokens"] + second["outputTokens"]
    client.close()


ANTHROPIC_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                  "messages": [{"role": "user", "content": "REPLY_WORDS 12"}]}


def test_invoke_anthropic_body(bedrock: Any) -> None:
    r = bedrock.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY))
    message = json.loads(r["body"].read())
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert message["content"][0]["text"] == " ".join(f"w{i % 10}" for i in range(12))
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-output-token-count"] == "12"


def test_invoke_with_response_stream(bedrock: Any) -> None:
    r = bedrock.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY))
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == " ".join(
        f"w{i % 10}" for i in range(12))
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 12


def test_invoke_stream_raw_chunk_frames(upstream_url: str) -> None:
    r = httpx.post(upstream_url + f"/model/{MODEL}/invoke-with-response-stream", headers=SIGV4, json=ANTHROPIC_BODY)
    messages = _decode(r.content)
    assert {h[":event-type"] for h, _ in messages} == {"chunk"}
    first = json.loads(base64.b64decode(json.loads(messages[0][1])["bytes"]))
    assert first["type"] == "message_start"


def test_invoke_requires_bedrock_anthropic_version(bedrock: Any) -> None:
    with pytest.raises(ClientError) as err:
        bedrock.invoke_model(modelId=MODEL, body=json.dumps({**ANTHROPIC_BODY, "anthropic_version": "2023-06-01"}))
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_titan_embedding_via_invoke(bedrock: Any) -> None:
    r = bedrock.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "hi"}))
    body = json.loads(r["body"].read())
    assert len(body["embedding"]) == 8 and body["inputTextTokenCount"] == 1


def test_errors_in_bedrock_shape(bedrock: Any, upstream_url: str) -> None:
    with pytest.raises(ClientError) as err:
        bedrock.converse(modelId="fail-429", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    with pytest.raises(ClientError) as err:
        bedrock.converse(modelId="fail-503", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert err.value.response["Error"]["Code"] == "ServiceUnavailableException"
    raw = httpx.post(upstream_url + "/model/fail-429/converse", headers=SIGV4,
                     json={"messages": [{"role": "user", "content": [{"text": "x"}]}]})
    assert raw.headers["x-amzn-ErrorType"].startswith("ThrottlingException:")
    assert set(raw.json()) == {"message"} and "retry-after" in raw.headers


def test_unsigned_request_is_rejected(upstream_url: str) -> None:
    r = httpx.post(upstream_url + f"/model/{MODEL}/converse",
                   json={"messages": [{"role": "user", "content": [{"text": "x"}]}]})
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"].startswith("UnrecognizedClientException")


def test_cut_converse_stream_loses_metadata(upstream_url: str) -> None:
    with httpx.stream("POST", upstream_url + "/model/cut-2/converse-stream", headers=SIGV4,
                      json={"messages": [{"role": "user", "content": [{"text": "REPLY_WORDS 30"}]}]}) as r:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for part in r.iter_bytes():
                received += part
    types = [h[":event-type"] for h, _ in _decode(received)]
    assert len(types) == 2 and "metadata" not in types
