from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

KEY = {"x-goog-api-key": "AIza-test"}


def _url(base: str, model: str, action: str) -> str:
    return f"{base}/v1beta/models/{model}:{action}"


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def test_generate_content_json(upstream_url: str) -> None:
    r = httpx.post(_url(upstream_url, "gemini-2.0-flash", "generateContent"), headers=KEY,
                   json=_body("hello", systemInstruction={"parts": [{"text": "be brief"}]}))
    assert r.status_code == 200
    data = r.json()
    candidate = data["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "mock reply: hello"}]}
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] == 5
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert "thoughtsTokenCount" not in usage and "cachedContentTokenCount" not in usage
    assert data["modelVersion"] == "gemini-2.0-flash" and data["responseId"]


def test_key_in_query_and_missing_key(upstream_url: str) -> None:
    ok = httpx.post(_url(upstream_url, "gemini-2.0-flash", "generateContent") + "?key=abc", json=_body("x"))
    assert ok.status_code == 200
    missing = httpx.post(_url(upstream_url, "gemini-2.0-flash", "generateContent"), json=_body("x"))
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"


def test_thinking_model_and_max_tokens(upstream_url: str) -> None:
    r = httpx.post(_url(upstream_url, "gemini-2.5-flash", "generateContent"), headers=KEY,
                   json=_body("REPLY_WORDS 10", generationConfig={"maxOutputTokens": 4})).json()
    assert r["candidates"][0]["finishReason"] == "MAX_TOKENS"
    usage = r["usageMetadata"]
    assert usage["thoughtsTokenCount"] > 0
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 4 + usage["thoughtsTokenCount"]


def test_function_call_and_response_parts(upstream_url: str) -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "earlier"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"ok": True}}},
                                       {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                                       {"text": 'CALL_TOOL lookup {"q": "z"}'}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "object"}}]}],
    }
    r = httpx.post(_url(upstream_url, "gemini-2.0-flash", "generateContent"), headers=KEY, json=body).json()
    assert r["candidates"][0]["content"]["parts"] == [{"functionCall": {"name": "lookup", "args": {"q": "z"}}}]
    assert r["candidates"][0]["finishReason"] == "STOP"


def test_safety_block(upstream_url: str) -> None:
    r = httpx.post(_url(upstream_url, "gemini-2.0-flash", "generateContent"), headers=KEY,
                   json=_body("please TRIGGER_SAFETY")).json()
    candidate = r["candidates"][0]
    assert candidate["finishReason"] == "SAFETY" and "content" not in candidate
    assert any(rating.get("blocked") for rating in candidate["safetyRatings"])


def _sse_payloads(text: str) -> list[dict[str, Any]]:
    events = [e for e in text.replace("\r\n", "\n").split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events)
    return [json.loads(e[6:]) for e in events]


def test_stream_sse(upstream_url: str) -> None:
    r = httpx.post(_url(upstream_url, "gemini-2.0-flash", "streamGenerateContent") + "?alt=sse", headers=KEY,
                   json=_body("REPLY_WORDS 30"))
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = _sse_payloads(r.text)
    assert len(payloads) > 2
    text = "".join(p["candidates"][0]["content"]["parts"][0]["text"] for p in payloads)
    assert text == " ".join(f"w{i % 10}" for i in range(30))
    assert all("finishReason" not in p["candidates"][0] for p in payloads[:-1])
    assert payloads[-1]["candidates"][0]["finishReason"] == "STOP"
    assert payloads[-1]["usageMetadata"]["candidatesTokenCount"] == 30


def test_stream_json_array_without_alt(upstream_url: str) -> None:
    r = httpx.post(_url(upstream_url, "gemini-2.0-flash", "streamGenerateContent"), headers=KEY,
                   json=_body("REPLY_WORDS 30"))
    items = r.json()
    assert isinstance(items, list) and len(items) > 2
    assert items[-1]["usageMetadata"]["candidatesTokenCount"] == 30


def test_vertex_path_and_bearer(upstream_url: str) -> None:
    url = (f"{upstream_url}/v1/projects/p1/locations/us-central1/publishers/google/models/"
           "gemini-2.0-flash:generateContent")
    assert httpx.post(url, json=_body("x")).status_code == 401
    r = httpx.post(url, json=_body("hi"), headers={"Authorization": "Bearer ya29.token"})
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "mock reply: hi"


def test_implicit_cache_reports_cached_content_tokens(upstream_url: str) -> None:
    history = [{"role": "user", "parts": [{"text": "context " * 800}]},
               {"role": "model", "parts": [{"text": "ok"}]}]
    url = _url(upstream_url, "gemini-2.5-flash", "generateContent")
    headers = {"x-goog-api-key": "cache-key"}
    first = httpx.post(url, headers=headers, json={"contents": [*history, _body("a")["contents"][0]]}).json()
    second = httpx.post(url, headers=headers, json={"contents": [*history, _body("b")["contents"][0]]}).json()
    assert "cachedContentTokenCount" not in first["usageMetadata"]
    cached = second["usageMetadata"]["cachedContentTokenCount"]
    assert 1024 <= cached < second["usageMetadata"]["promptTokenCount"]


def test_embed_and_batch_embed(upstream_url: str) -> None:
    one = httpx.post(_url(upstream_url, "text-embedding-004", "embedContent"), headers=KEY,
                     json={"content": {"parts": [{"text": "hi"}]}}).json()
    assert len(one["embedding"]["values"]) == 8
    batch = httpx.post(_url(upstream_url, "text-embedding-004", "batchEmbedContents"), headers=KEY, json={
        "requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi"}]}},
                     {"model": "models/text-embedding-004", "content": {"parts": [{"text": "yo"}]},
                      "outputDimensionality": 16}],
    }).json()
    assert batch["embeddings"][0]["values"] == pytest.approx(one["embedding"]["values"])
    assert len(batch["embeddings"][1]["values"]) == 16


def test_errors_in_google_shape(upstream_url: str) -> None:
    r = httpx.post(_url(upstream_url, "fail-429", "generateContent"), headers=KEY, json=_body("x"))
    assert r.status_code == 429
    assert r.json() == {"error": {"code": 429, "message": r.json()["error"]["message"],
                                  "status": "RESOURCE_EXHAUSTED"}}
    bad = httpx.post(_url(upstream_url, "gemini-2.0-flash", "generateContent"), headers=KEY, json={"contents": []})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_cut_sse_stream(upstream_url: str) -> None:
    with httpx.stream("POST", _url(upstream_url, "cut-1", "streamGenerateContent") + "?alt=sse", headers=KEY,
                      json=_body("REPLY_WORDS 40")) as r:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for part in r.iter_bytes():
                received += part
    payloads = _sse_payloads(received.decode())
    assert len(payloads) == 1 and "usageMetadata" not in payloads[0]
