"""The semantic tier: the encoder (ONNX Runtime and numpy backends) against
sentence-transformers' vectors, the index, the entity check, and the whole gateway
(paraphrase hits, hard negatives, tenants, shadow mode, replicas sharing through Redis,
running without the extra)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relaygate.cache.entry import CachedAnswer
from relaygate.cache.semantic.embedder import DIM, MiniLMEmbedder
from relaygate.cache.semantic.entities import agree
from relaygate.cache.semantic.index import SemanticEntry, VectorIndex
from relaygate.formats.types import ChatResponse, TextPart, Usage
from tests.cache.helpers import cache_headers, chat, new_org_key
from tests.conftest import auth, gateway_client, make_config

DATA = Path(__file__).resolve().parent / "data" / "reference_vectors.json"


@pytest.fixture(scope="module", params=["onnx", "numpy"])
def embedder(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    return MiniLMEmbedder(backend=request.param)


def reference() -> tuple[list[str], np.ndarray]:
    """reference_vectors.json was made by sentence-transformers (torch) from the same model
    (see make_reference_vectors.py in that folder)."""
    ref = json.loads(DATA.read_text())
    assert len(ref["sentences"]) == 50
    return ref["sentences"], np.asarray(ref["vectors"], dtype=np.float32)


def test_encoder_matches_sentence_transformers(embedder: MiniLMEmbedder) -> None:
    """Both backends, one by one (the lookup path) and batched with padding."""
    sentences, expected = reference()
    one_by_one = np.stack([embedder.embed_batch([s])[0] for s in sentences])
    short = [i for i, s in enumerate(sentences) if len(s) < 200]
    batched = embedder.embed_batch([sentences[i] for i in short])  # padding changes no vector
    for got, want in ((one_by_one, expected), (batched, expected[short])):
        assert got.shape == want.shape and got.shape[1] == DIM and got.dtype == np.float32
        cosine = (got * want).sum(1) / np.linalg.norm(want, axis=1)
        assert cosine.min() >= 0.999, (cosine.min(), sentences[int(cosine.argmin())])
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_onnx_and_numpy_backends_agree() -> None:
    """The default backend is ONNX Runtime (installed with the extra); numpy is the fallback
    and gives the same vectors to float32 rounding."""
    default = MiniLMEmbedder()
    fallback = MiniLMEmbedder(backend="numpy")
    assert default.backend == "onnx" and fallback.backend == "numpy"
    sentences, _ = reference()
    fast = np.stack([default.embed_one(s) for s in sentences])
    slow = np.stack([fallback.embed_one(s) for s in sentences])
    assert ((fast * slow).sum(1)).min() >= 0.99999
    assert np.abs(fast - slow).max() < 1e-4
    assert default.embed("What is the capital of France?") is default.embed("What is the capital of France?")


def test_auto_backend_falls_back_to_numpy_without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "relaygate.cache.semantic.onnx_graph", raising=False)
    embedder = MiniLMEmbedder()
    assert embedder.backend == "numpy"
    sentences, expected = reference()
    assert float(embedder.embed_one(sentences[0]) @ expected[0]) >= 0.999
    with pytest.raises(ImportError):
        MiniLMEmbedder(backend="onnx")


def answer(text: str, tenant: str = "org:a") -> CachedAnswer:
    return CachedAnswer(ChatResponse("id", "m", [TextPart(text)], "end_turn", Usage(3, 4)), "mock", "m", "r", tenant)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_index_searches_only_its_context_and_bounds_its_size() -> None:
    evicted: list[int] = []
    clock = [1000.0]
    index = VectorIndex(max_entries=3, on_evict=evicted.append, clock=lambda: clock[0])
    for i in range(3):
        index.add(SemanticEntry(f"e{i}", "ctx-a", "org:a", "r", f"q{i}", unit(i), answer(f"a{i}"), 2000.0))
    assert [e.id for _, e in index.search("ctx-a", unit(1), 0.99)] == ["e1"]
    assert index.search("ctx-b", unit(1), 0.0) == []
    index.add(SemanticEntry("e3", "ctx-b", "org:a", "r", "q3", unit(3), answer("a3"), 2000.0))
    assert len(index) == 3 and sum(evicted) == 1 and "e0" not in index.entries
    index.remove("e1")  # the bucket moves its last row into the hole
    assert [e.id for _, e in index.search("ctx-a", unit(2), 0.99)] == ["e2"]
    clock[0] = 3000.0
    assert index.search("ctx-a", unit(2), 0.99) == [] and "e2" not in index.entries  # expired
    assert index.purge(tenant="org:a") == 1 and len(index) == 0


@pytest.mark.parametrize(("a", "b", "same"), [
    ("What is the capital of France?", "which city is the capital of france", True),
    ("Book a table for two at 7pm", "Reserve a table for 2 at 7pm", True),
    ("What is the capital of France?", "What is the capital of Germany?", False),
    ("Convert 100 USD to EUR", "Convert 250 USD to EUR", False),
    ("Refund the $49.99 charge", "Refund the $49.98 charge", False),
    ("How do I cancel my subscription?", "How do I not cancel my subscription?", False),
    ("Can I take ibuprofen with coffee?", "Can't I take ibuprofen with coffee?", False),
    ("Weather in 'New York' tomorrow", "weather in new york tomorrow", True),
    # content words: a one-for-one swap is a different question, rewording is not
    ("How much caffeine is in coffee?", "How much caffeine is in tea?", False),
    ("Is honey good for a cold?", "Is honey bad for a cold?", False),
    ("When does the bank open?", "When does the bank close?", False),
    ("Is it legal to fly a drone here?", "Is it illegal to fly a drone here?", False),
    ("How do I scroll up in Excel?", "How do I scroll down in Excel?", False),
    ("Is France larger than Kenya?", "Is Kenya larger than France?", False),
    ("Did Japan defeat Brazil in the final?", "Did Brazil defeat Japan in the final?", False),
    ("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?", True),
    ("What is the population of Japan?", "How many people live in Japan?", True),
    ("Multiply 23 by 3.", "What's 23 multiplied by 3?", True),
    ("How much is 100 USD in EUR?", "What is 100 dollars in euros?", True),
])
def test_entity_check(a: str, b: str, same: bool) -> None:
    assert agree(a, b) is same
    assert agree(b, a) is same


def semantic_config(tmp_path: Any, **semantic: Any) -> Any:
    routes = {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}], "cache": {"semantic_threshold": 0.9}}}
    return make_config({"routes": routes, "cache": {"semantic": {"enabled": True, **semantic}}}, tmp_path)


async def ask(client: Any, text: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    r = await client.post("/v1/chat/completions", json=chat(text, **params), headers=headers or auth())
    assert r.status == 200, await r.text()
    return r, await r.json()


async def test_paraphrase_hits_and_hard_negatives_miss(tmp_path: Any) -> None:
    async with gateway_client(semantic_config(tmp_path)) as client:
        r, first = await ask(client, "What is the capital of France?")
        assert r.headers["x-relaygate-cache"] == "miss"
        r, again = await ask(client, "Which city is the capital of France?")
        assert r.headers["x-relaygate-cache"] == "hit-semantic"
        assert r.headers["x-relaygate-attempts"] == "0"
        assert float(r.headers["x-relaygate-cache-similarity"]) >= 0.9
        assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
        for negative in ("What is the capital of Germany?", "What is not the capital of France?",
                         "What was the capital of France in 1500?"):
            r, _ = await ask(client, negative)
            assert r.headers["x-relaygate-cache"] == "miss", negative
        # another system prompt (context) or another parameter: never a semantic hit
        r = await client.post("/v1/chat/completions", headers=auth(), json={
            "model": "mock", "temperature": 0, "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Which city is the capital of France?"}]})
        assert r.headers["x-relaygate-cache"] == "miss"
        r, _ = await ask(client, "Which city is the capital of France?", max_tokens=5)
        assert r.headers["x-relaygate-cache"] == "miss"
        r, _ = await ask(client, "Which is the capital city of France?", cache_headers(control="no-semantic"))
        assert r.headers["x-relaygate-cache"] == "miss"
        metrics = await (await client.get("/metrics")).text()
        assert 'relaygate_cache_tier_lookups_total{result="hit",route="mock",tier="semantic"} 1.0' in metrics
        # a reported false semantic hit removes the entry
        r, _ = await ask(client, "Which city is the capital of France?")
        assert r.headers["x-relaygate-cache"] in ("hit-semantic", "hit-exact")


async def test_no_cross_tenant_semantic_hits(tmp_path: Any) -> None:
    async with gateway_client(semantic_config(tmp_path)) as client:
        acme = await new_org_key(client, "acme", "acme")
        acme2 = await new_org_key(client, "acme", "acme-2")
        globex = await new_org_key(client, "globex", "globex")
        questions = ["How do I reset my password?", "What is the refund policy for annual plans?"]
        paraphrases = ["How can I reset my password?", "What's the refund policy for annual plans?"]
        for q in questions:
            r, _ = await ask(client, q, cache_headers(acme))
            assert r.headers["x-relaygate-cache"] == "miss"
        for p in paraphrases:
            r, _ = await ask(client, p, cache_headers(globex))
            assert r.headers["x-relaygate-cache"] == "miss", "globex got acme's answer"
        for p in paraphrases:
            r, _ = await ask(client, p, cache_headers(acme2))
            assert r.headers["x-relaygate-cache"] in ("hit-semantic", "hit-exact")


async def test_shadow_mode_logs_but_answers_from_the_provider(tmp_path: Any, caplog: Any) -> None:
    async with gateway_client(semantic_config(tmp_path, mode="shadow")) as client:
        await ask(client, "How do I reset my password?")
        with caplog.at_level(logging.INFO, logger="relaygate.cache"):
            r, _ = await ask(client, "How can I reset my password?")
        assert r.headers["x-relaygate-cache"] == "miss"
        assert r.headers["x-relaygate-attempts"] == "1"
        assert r.headers["x-relaygate-cache-shadow"].startswith("would-hit; similarity=0.9")
        assert any("would have served" in rec.getMessage() and "similarity" in rec.getMessage()
                   for rec in caplog.records)
        metrics = await (await client.get("/metrics")).text()
        assert 'relaygate_cache_semantic_shadow_total{result="would_hit",route="mock"} 1.0' in metrics


async def test_replicas_share_semantic_entries_through_redis(tmp_path: Any, redis_url: str) -> None:
    def cfg(name: str) -> Any:
        c = semantic_config(tmp_path, sync_interval_s=0.1)
        return c.model_copy(update={"state": c.state.model_copy(update={
            "redis_url": redis_url, "database_url": f"sqlite:///{tmp_path}/{name}.db"})})

    async with gateway_client(cfg("a")) as a, gateway_client(cfg("b")) as b:
        r, _ = await ask(a, "How many moons does Jupiter have?")
        assert r.headers["x-relaygate-cache"] == "miss"
        sem_b = b.server.app[_gateway_key()].services["cache"].semantic
        deadline = time.monotonic() + 5
        while sem_b.entries() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        r, _ = await ask(b, "How many moons orbit Jupiter?")
        assert r.headers["x-relaygate-cache"] == "hit-semantic"
        # a third replica started later loads the shared entries
        async with gateway_client(cfg("c")) as c:
            r, _ = await ask(c, "How many moons orbit Jupiter?")
            assert r.headers["x-relaygate-cache"] in ("hit-semantic", "hit-exact")
        r = await a.post("/admin/cache/purge", json={"route": "mock"}, headers=auth())
        assert (await r.json())["purged"]["semantic"] >= 1
        deadline = time.monotonic() + 5
        while sem_b.entries() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sem_b.entries() == 0


def _gateway_key() -> Any:
    from relaygate.server.gateway import GATEWAY

    return GATEWAY


async def test_without_the_extra_the_gateway_runs_exact_only(tmp_path: Any, caplog: Any,
                                                             monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "relaygate.cache.semantic", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="relaygate.cache"):
        async with gateway_client(semantic_config(tmp_path)) as client:
            r, _ = await ask(client, "What is the capital of France?")
            assert r.headers["x-relaygate-cache"] == "miss"
            r, _ = await ask(client, "What is the capital of France?")
            assert r.headers["x-relaygate-cache"] == "hit-exact"
            r, _ = await ask(client, "Which city is the capital of France?")
            assert r.headers["x-relaygate-cache"] == "miss"
    assert any("exact caching only" in rec.getMessage() and "relaygate[semantic]" in rec.getMessage()
               for rec in caplog.records)
