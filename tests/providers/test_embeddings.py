"""`POST /v1/embeddings` through the whole gateway to mock upstreams of each provider:
batch input, base64 encoding, fallback, attempts headers, errors, the OpenAI schema."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relaygate.mock_upstream import serving
from relaygate.mock_upstream.embeddings import embedding_vector
from tests.conftest import auth, gateway_client, make_config
from tests.openapi_spec import validate

AWS = {"region": "us-east-1", "aws_access_key_id": "AKIAEMBEDTESTKEY0001", "aws_secret_access_key": "emb-secret-key"}


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with serving() as url:
        yield url


def config(url: str) -> dict[str, Any]:
    providers = {
        "openai-main": {"type": "openai", "api_key": "sk-emb-openai-000000", "base_url": url + "/v1"},
        "compat": {"type": "openai-compatible", "api_key": "local-key-000000", "base_url": url + "/v1"},
        "azure": {"type": "azure-openai", "api_key": "azure-emb-key-0000", "base_url": url},
        "gemini": {"type": "gemini", "api_key": "gemini-emb-key-0000", "base_url": url},
        "bedrock": {"type": "bedrock", "base_url": url, **AWS},
        "anthropic": {"type": "anthropic", "api_key": "sk-ant-emb-00000000", "base_url": url},
    }
    one = {name: {"targets": [{"provider": p, "model": m}]} for name, p, m in [
        ("e-openai", "openai-main", "text-embedding-3-small"),
        ("e-compat", "compat", "nomic-embed-text"),
        ("e-azure", "azure", "my-embedding-deployment"),
        ("e-gemini", "gemini", "text-embedding-004"),
        ("e-titan", "bedrock", "amazon.titan-embed-text-v2:0"),
        ("e-anthropic", "anthropic", "claude-sonnet-4-5"),
        ("e-mock", "mock", "mock-embed"),
    ]}
    one["e-fallback"] = {"strategy": "fallback", "targets": [
        {"provider": "openai-main", "model": "fail-503"},
        {"provider": "bedrock", "model": "amazon.titan-embed-text-v2:0"},
    ]}
    return {"providers": providers, "routes": one}


@pytest.mark.parametrize("route", ["e-openai", "e-compat", "e-azure", "e-gemini", "e-titan", "e-mock"])
async def test_batch_input_in_order_with_usage(upstream: str, route: str) -> None:
    texts = ["alpha", "beta gamma", "delta"]
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", json={"model": route, "input": texts}, headers=auth())
        body = await resp.json()
    assert resp.status == 200, body
    validate("CreateEmbeddingResponse", body)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for text, item in zip(texts, body["data"], strict=True):
        assert item["embedding"] == pytest.approx(embedding_vector(text), abs=1e-6)
    assert body["usage"]["prompt_tokens"] > 0
    assert resp.headers["x-relaygate-attempts"] == "1"
    assert resp.headers["x-relaygate-provider"]


async def test_base64_is_little_endian_float32(upstream: str) -> None:
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", headers=auth(), json={
            "model": "e-gemini", "input": "hello", "encoding_format": "base64", "dimensions": 16})
        body = await resp.json()
    assert resp.status == 200, body
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert len(raw) == 16 * 4
    assert list(struct.unpack("<16f", raw)) == pytest.approx(embedding_vector("hello", 16), abs=1e-7)


async def test_fallback_counts_attempts(upstream: str) -> None:
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", json={"model": "e-fallback", "input": ["a", "b"]}, headers=auth())
        body = await resp.json()
    assert resp.status == 200, body
    assert resp.headers["x-relaygate-attempts"] == "2"
    assert resp.headers["x-relaygate-degraded"] == "true"
    assert resp.headers["x-relaygate-provider"] == "bedrock"
    assert body["model"] == "amazon.titan-embed-text-v2:0"
    assert len(body["data"]) == 2


@pytest.mark.parametrize(("payload", "status", "fragment"), [
    ({"model": "e-anthropic", "input": "x"}, 400, "has no embeddings API"),
    ({"model": "e-titan", "input": [[1, 2, 3]]}, 400, "token arrays"),
    ({"model": "e-openai", "input": []}, 400, "'input'"),
    ({"model": "e-openai", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "no-such-route", "input": "x"}, 404, "does not exist"),
])
async def test_errors_in_openai_envelope(upstream: str, payload: dict[str, Any], status: int, fragment: str) -> None:
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", json=payload, headers=auth())
        body = await resp.json()
    assert resp.status == status, body
    assert fragment in body["error"]["message"]
    assert "emb-secret-key" not in str(body)


async def test_needs_a_key(upstream: str) -> None:
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", json={"model": "e-openai", "input": "x"})
    assert resp.status == 401


async def test_invalid_json_is_a_400(upstream: str) -> None:
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", data=b'{"model": "e-openai", "input": ', headers=auth())
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_json"


async def test_shared_stages_see_embeddings(upstream: str) -> None:
    """Metrics and the route/attempt records come from the gateway's own stages."""
    async with gateway_client(make_config(config(upstream))) as client:
        resp = await client.post("/v1/embeddings", json={"model": "e-fallback", "input": "x"}, headers=auth())
        assert resp.status == 200
        metrics = await (await client.get("/metrics", headers=auth())).text()
    assert 'relaygate_upstream_attempts_total{model="fail-503",provider="openai-main",status="503"} 1.0' in metrics
    assert 'route="e-fallback"' in metrics
