"""Semantic-cache quality and cache lookup latency.

Quality, on labelled pairs: bench/data/cache_pairs.jsonl (360 generated pairs, rebuilt by
bench/data/make_cache_pairs.py; the entity check's rules were written looking at it) and
bench/data/cache_pairs_holdout.jsonl (60 hand-written pairs the rules never saw: the honest
figure). For each similarity threshold: the share of paraphrase pairs that hit (want high)
and of hard negatives that hit (false hits, want zero), with the entity check as served and
without it.

Latency: p50/p99 of one lookup per tier, in process: exact = canonical key + LRU read +
decode (20,000 entries); semantic = embedding of a question never seen before + search
of a 10,000-entry context + entity check. Then the embedding alone (batch of one, no
vector cache) of a 9-token and a 24-token question, `--latency-n` runs each.

    .venv/bin/python bench/cache_eval.py [--pairs FILE] [--latency-n 300] [--backend auto|onnx|numpy]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from relaygate.cache.canonical import cache_key  # noqa: E402
from relaygate.cache.entry import CachedAnswer  # noqa: E402
from relaygate.cache.semantic.embedder import DIM, MiniLMEmbedder  # noqa: E402
from relaygate.cache.semantic.entities import agree  # noqa: E402
from relaygate.cache.semantic.index import SemanticEntry, VectorIndex  # noqa: E402
from relaygate.cache.semantic.tier import SemanticCache  # noqa: E402
from relaygate.cache.store import MemoryStore, StoreKey  # noqa: E402
from relaygate.config.models import CacheConfig, RouteConfig  # noqa: E402
from relaygate.formats import openai as openai_fmt  # noqa: E402
from relaygate.formats.types import ChatResponse, TextPart, Usage  # noqa: E402

BENCH = Path(__file__).resolve().parent
THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def quality(pairs: list[dict[str, str]], embedder: MiniLMEmbedder, default: float) -> None:
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    vectors = dict(zip(texts, embedder.embed_batch(texts), strict=True))
    sims = [float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs]
    agrees = [agree(p["a"], p["b"]) for p in pairs]
    para = [i for i, p in enumerate(pairs) if p["label"] == "paraphrase"]
    neg = [i for i, p in enumerate(pairs) if p["label"] == "negative"]
    print(f"pairs: {len(pairs)} ({len(para)} paraphrases, {len(neg)} hard negatives: "
          f"{dict(Counter(pairs[i]['kind'] for i in neg))})")
    print(f"{'threshold':>9} | {'paraphrase hit rate':>19} {'false-hit rate':>14} | without entity check: "
          f"{'hit':>6} {'false-hit':>9}")
    for t in THRESHOLDS:
        hit = sum(sims[i] >= t and agrees[i] for i in para) / len(para)
        false = sum(sims[i] >= t and agrees[i] for i in neg) / len(neg)
        raw_hit = sum(sims[i] >= t for i in para) / len(para)
        raw_false = sum(sims[i] >= t for i in neg) / len(neg)
        mark = "  <- default" if abs(t - default) < 1e-9 else ""
        print(f"{t:>9.2f} | {hit:>19.1%} {false:>14.1%} | {'':>22}{raw_hit:>6.1%} {raw_false:>9.1%}{mark}")
    print(f"false hits at the default threshold {default}, by kind (with entity check):")
    for kind, n in Counter(pairs[i]["kind"] for i in neg).items():
        bad = [pairs[i] for i in neg if pairs[i]["kind"] == kind and sims[i] >= default and agrees[i]]
        print(f"  {kind:<10} {len(bad)}/{n}" + (f"  e.g. {bad[0]['a']!r} ~ {bad[0]['b']!r}" if bad else ""))


def cached(text: str) -> CachedAnswer:
    return CachedAnswer(ChatResponse("id", "m", [TextPart(text)], "end_turn", Usage(30, 120)), "p", "m", "r", "org:a")


async def exact_latency(n: int) -> list[float]:
    store = MemoryStore(256 * 1024 * 1024)
    route = RouteConfig.model_validate({"targets": [{"provider": "mock", "model": "m"}]})
    value = cached("An answer of a realistic size. " * 30).to_bytes()
    bodies = [{"model": "r", "temperature": 0, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Question number {i}: what is the capital of country {i}?"}]}
        for i in range(20_000)]
    for body in bodies:
        chat = openai_fmt.parse_request(body)
        await store.put(StoreKey("org:a", "r", cache_key(chat, "r", route, "org:a")), value, 3600)
    timings = []
    for i in range(n):
        chat = openai_fmt.parse_request(bodies[(i * 7919) % len(bodies)])
        started = time.perf_counter()
        raw = await store.get(StoreKey("org:a", "r", cache_key(chat, "r", route, "org:a")))
        assert raw is not None and CachedAnswer.from_bytes(raw) is not None
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def semantic_latency(embedder: MiniLMEmbedder, questions: list[str], threshold: float) -> list[float]:
    index = VectorIndex(max_entries=100_000)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((10_000, DIM)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    answer = cached("stored")
    for i, v in enumerate(noise):
        index.add(SemanticEntry(f"n{i}", "ctx", "org:a", "r", f"noise {i}", v, answer, time.time() + 3600))
    tier = SemanticCache(embedder, index)
    timings = []
    for q in questions:  # each embedded for the first time
        started = time.perf_counter()
        await tier.lookup("ctx", "org:a", "r", q, threshold)
        timings.append((time.perf_counter() - started) * 1000)
    await tier.close()
    return timings


SHORT = "What is the capital of France?"  # 9 tokens with [CLS] and [SEP]
LONG = "Kubernetes pod stuck in CrashLoopBackOff after the upgrade, what should I check first?"  # 24


def embedding_latency(embedder: MiniLMEmbedder, text: str, n: int) -> list[float]:
    for _ in range(20):  # warm-up
        embedder.embed_one(text)
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        embedder.embed_one(text)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def report(name: str, timings: list[float]) -> None:
    print(f"  {name:<13} n={len(timings):<5} p50 {statistics.median(timings):8.3f} ms   "
          f"p99 {percentile(timings, 0.99):8.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description="semantic cache quality and lookup latency")
    ap.add_argument("--pairs", type=Path, nargs="+",
                    default=[BENCH / "data" / "cache_pairs.jsonl", BENCH / "data" / "cache_pairs_holdout.jsonl"])
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--backend", choices=["auto", "onnx", "numpy"], default="auto", help="the encoder's backend")
    args = ap.parse_args()
    default = CacheConfig().semantic.threshold
    embedder = MiniLMEmbedder(backend=args.backend)
    pairs: list[dict[str, str]] = []
    for path in args.pairs:
        these = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        print(f"== {path.name}")
        quality(these, embedder, default)
        pairs += these
    questions = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})[: args.latency_n]
    print(f"lookup latency per tier (in process, one lookup at a time; encoder: {embedder.backend}):")
    report("exact", asyncio.run(exact_latency(max(args.latency_n, 2000))))
    report("semantic", asyncio.run(semantic_latency(MiniLMEmbedder(backend=args.backend), questions, default)))
    for text in (SHORT, LONG):
        tokens = len(embedder.tokenizer.encode(text).ids)
        report(f"embed {tokens} tok", embedding_latency(embedder, text, args.latency_n))


if __name__ == "__main__":
    main()
