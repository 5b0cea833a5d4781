from __future__ import annotations

import httpx
import openai
import pytest
from openai import AzureOpenAI


@pytest.fixture
def client(upstream_url: str) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=upstream_url, api_key="azure-key", api_version="2024-10-21", max_retries=0)


def test_chat_and_stream(client: AzureOpenAI) -> None:
    r = client.chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "mock reply: hi"
    assert r.model == "my-gpt4o"  # the deployment name
    chunks = list(client.chat.completions.create(
        model="my-gpt4o", messages=[{"role": "user", "content": "REPLY_WORDS 9"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9


def test_embeddings(client: AzureOpenAI) -> None:
    r = client.embeddings.create(model="my-embedder", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8


def test_errors_and_auth(client: AzureOpenAI, upstream_url: str) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="fail-429", messages=[{"role": "user", "content": "x"}])
    assert err.value.body == {"code": "429", "message": err.value.body["message"]}  # type: ignore[index]
    url = upstream_url + "/openai/deployments/d/chat/completions"
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(url + "?api-version=2024-10-21", json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"api-key": "k"}).status_code == 404
