"""Wires the cache into a gateway: the stage (after route, before limits), its store
(Redis when configured, else the in-process LRU), metrics and admin endpoints."""

from __future__ import annotations

import logging

from relaygate.cache.feedback import HitLog, admin_routes
from relaygate.cache.metrics import CacheMetrics
from relaygate.cache.prompt_caching import PromptCaching
from relaygate.cache.stage import CacheStage, SemanticTier
from relaygate.cache.store import AnswerStore, MemoryStore, RedisStore
from relaygate.server.gateway import Gateway

log = logging.getLogger("relaygate.cache")


def build_store(gw: Gateway, metrics: CacheMetrics) -> AnswerStore:
    exact = gw.cfg.cache.exact
    redis = gw.services.get("redis")
    if exact.backend == "redis" and redis is None:
        raise ValueError("cache.exact.backend is 'redis' but state.redis_url is not set")
    if redis is not None and exact.backend != "memory":
        return RedisStore(redis)
    return MemoryStore(exact.max_bytes, on_evict=lambda n: metrics.evictions.labels("exact").inc(n))


async def build_semantic(gw: Gateway, metrics: CacheMetrics) -> SemanticTier | None:
    """The semantic tier when it is enabled (globally or on any route) and its extra is
    installed; without the extra the gateway runs with exact caching only."""
    sem = gw.cfg.cache.semantic
    wanted = sem.enabled or any(r.cache.semantic for r in gw.cfg.routes.values())
    if not wanted:
        return None
    try:
        from relaygate.cache.semantic import build_tier
    except ImportError as exc:
        log.warning("semantic cache is enabled but its dependencies are missing (%s): running with "
                    "exact caching only; install with: pip install 'relaygate[semantic]'", exc)
        return None
    return await build_tier(gw, metrics)


async def install(gw: Gateway) -> None:
    metrics = CacheMetrics(gw.metrics.registry)
    store = build_store(gw, metrics)
    semantic = await build_semantic(gw, metrics)
    hits = HitLog(gw.services.get("redis"))
    stage = CacheStage(gw.cfg, store, metrics, gw.metrics.route_label, hits, PromptCaching(gw.cfg), semantic,
                       defer=gw.after_answers)
    gw.add_stage(stage)
    gw.on_close(stage.close)
    gw.metrics.on_render.append(stage.refresh_gauges)
    gw.metrics.on_render.append(metrics.flush)
    gw.services["cache"] = stage
    gw.admin_routes.append(admin_routes(stage))
    log.info("cache: exact on %s%s", store.backend,
             f", semantic ({gw.cfg.cache.semantic.mode})" if semantic is not None else "")
