"""Stage: answer from the cache before the provider call, store the answer after it.

Runs after the route stage (the key includes the resolved route) and before limits, so a
hit still passes limits and budgets and is priced and logged like any request (its
`ctx.usage` is the cached usage; `ctx.cache_status` tells the cost stage and the ledger it
was a hit). Order of tiers: exact, then semantic; a miss places prompt-cache breakpoints
for Anthropic targets and, when identical misses are in flight, waits for the first."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from relaygate.cache.canonical import cache_key, context_digest, deterministic, last_user_text, tenant_of
from relaygate.cache.entry import CachedAnswer, replay_stream
from relaygate.cache.feedback import HitLog, HitRecord
from relaygate.cache.metrics import CacheMetrics
from relaygate.cache.prompt_caching import PromptCaching
from relaygate.cache.singleflight import SingleFlight
from relaygate.cache.store import AnswerStore, MemoryStore, StoreKey
from relaygate.config.models import GatewayConfig, RouteCacheConfig, RouteConfig
from relaygate.pipeline.context import RequestContext
from relaygate.routing.plan import Leaf

log = logging.getLogger("relaygate.cache")

# Answers worth replaying: complete ones (a filtered or refused answer is asked again).
_STORABLE_STOPS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    answer: CachedAnswer
    similarity: float
    entry_id: str


class SemanticTier(Protocol):
    """Answers by meaning of the last user message, under an exactly matching context."""

    async def lookup(self, context: str, tenant: str, route: str, text: str,
                     threshold: float) -> SemanticMatch | None: ...

    async def store(self, context: str, tenant: str, route: str, text: str, answer: CachedAnswer,
                    ttl_s: int) -> None: ...

    async def purge(self, tenant: str | None = None, route: str | None = None) -> int: ...

    async def remove(self, entry_id: str) -> None: ...

    def entries(self) -> int: ...


@dataclass(slots=True)
class CacheDecision:
    """What this request may do with the cache, kept in `ctx.state["cache"]`."""

    key: StoreKey | None = None
    ttl_s: int = 0
    store: bool = False
    leader: bool = False
    semantic_context: str | None = None
    semantic_text: str | None = None
    semantic_ttl_s: int = 0


class CacheStage:
    name = "cache"

    def __init__(self, cfg: GatewayConfig, store: AnswerStore, metrics: CacheMetrics,
                 route_label: Callable[[str], str], hits: HitLog, prompt_caching: PromptCaching,
                 semantic: SemanticTier | None = None,
                 defer: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.route_label = route_label
        self.hits = hits
        self.prompt_caching = prompt_caching
        self.semantic = semantic
        self.flights: SingleFlight[CachedAnswer] = SingleFlight()
        # Gateway.after_answers: answers are stored once they are written, not before
        self.defer = defer
        self._storing: set[asyncio.Task[None]] = set()

    # --- lookup --------------------------------------------------------------------------

    async def on_request(self, ctx: RequestContext) -> None:
        route: RouteConfig | None = ctx.state.get("route")
        rc = route.cache if route is not None else RouteCacheConfig()
        exact = self.cfg.cache.exact
        decision = CacheDecision()
        ctx.state["cache"] = decision
        enabled = exact.enabled if rc.enabled is None else rc.enabled
        if not enabled or not (rc.allow_nondeterministic or deterministic(ctx.chat, ctx.plan)):
            ctx.cache_status = "bypass"
            self.prompt_caching.apply(ctx)
            return
        tenant = tenant_of(ctx.principal, rc.scope or self.cfg.cache.scope)
        decision.key = StoreKey(tenant, ctx.route_name, cache_key(ctx.chat, ctx.route_name, route, tenant))
        decision.ttl_s = rc.ttl_s or exact.ttl_s
        decision.store = ctx.cache_control != "no-store"
        self._plan_semantic(ctx, decision, route, rc, tenant)
        if ctx.cache_control == "no-cache":
            # not read, but the fresh answer replaces the stored one (a refresh)
            ctx.cache_status = "bypass"
            self.prompt_caching.apply(ctx)
            return
        if await self._lookup_exact(ctx, decision) or await self._lookup_semantic(ctx, decision, rc):
            return
        ctx.cache_status = "miss"
        if exact.single_flight and await self._join_flight(ctx, decision):
            return
        self.prompt_caching.apply(ctx)

    def _plan_semantic(self, ctx: RequestContext, decision: CacheDecision, route: RouteConfig | None,
                       rc: RouteCacheConfig, tenant: str) -> None:
        sem = self.cfg.cache.semantic
        on = sem.enabled if rc.semantic is None else rc.semantic
        if self.semantic is None or not on or ctx.cache_control == "no-semantic":
            return
        text = last_user_text(ctx.chat)
        if text is None:
            return
        decision.semantic_text = text
        decision.semantic_context = context_digest(ctx.chat, ctx.route_name, route, tenant)
        decision.semantic_ttl_s = sem.ttl_s

    async def _lookup_exact(self, ctx: RequestContext, decision: CacheDecision) -> bool:
        assert decision.key is not None
        started = time.perf_counter()
        try:
            raw = await self.store.get(decision.key)
        except Exception as exc:  # a cache outage must not fail requests
            log.warning("exact cache read failed (%s): serving from the provider", exc)
            raw = None
        self.metrics.lookup_time("exact").observe(time.perf_counter() - started)
        answer = CachedAnswer.from_bytes(raw) if raw is not None else None
        route = self.route_label(ctx.route_name)
        if answer is None or answer.tenant != decision.key.tenant:
            self.metrics.lookup.inc("exact", "miss", route)
            return False
        self.metrics.lookup.inc("exact", "hit", route)
        await self._serve(ctx, answer, "hit-exact", HitRecord("exact", ctx.route_name, decision.key.tenant,
                                                         decision.key.digest))
        return True

    async def _lookup_semantic(self, ctx: RequestContext, decision: CacheDecision, rc: RouteCacheConfig) -> bool:
        if self.semantic is None or decision.semantic_context is None or decision.semantic_text is None:
            return False
        assert decision.key is not None
        sem = self.cfg.cache.semantic
        threshold = rc.semantic_threshold or sem.threshold
        route = self.route_label(ctx.route_name)
        started = time.perf_counter()
        try:
            match = await self.semantic.lookup(decision.semantic_context, decision.key.tenant, ctx.route_name,
                                               decision.semantic_text, threshold)
        except Exception as exc:
            log.warning("semantic cache lookup failed (%s): serving from the provider", exc)
            match = None
        self.metrics.lookup_time("semantic").observe(time.perf_counter() - started)
        if sem.mode == "shadow":
            self.metrics.shadow.labels("would_hit" if match else "miss", route).inc()
            if match is not None:
                log.info("semantic cache (shadow) would have served request %s on route %s: similarity %.4f "
                         "to %r (entry %s); answering from the provider", ctx.request_id, ctx.route_name,
                         match.similarity, match.answer.question, match.entry_id)
                ctx.response_headers["x-relaygate-cache-shadow"] = f"would-hit; similarity={match.similarity:.4f}"
            return False
        if match is None or match.answer.tenant != decision.key.tenant:
            self.metrics.lookup.inc("semantic", "miss", route)
            return False
        self.metrics.lookup.inc("semantic", "hit", route)
        ctx.response_headers["x-relaygate-cache-similarity"] = f"{match.similarity:.4f}"
        await self._serve(ctx, match.answer, "hit-semantic",
                    HitRecord("semantic", ctx.route_name, decision.key.tenant, match.entry_id, match.similarity))
        return True

    async def _join_flight(self, ctx: RequestContext, decision: CacheDecision) -> bool:
        assert decision.key is not None
        flight_key = f"{decision.key.tenant}\x00{decision.key.digest}"
        flight = self.flights.join(flight_key)
        if flight is None:
            decision.leader = True
            return False
        answer = await self.flights.wait(flight, self.cfg.cache.exact.single_flight_wait_s)
        if answer is None:
            return False  # the leader failed or took too long: ask the provider
        self.metrics.coalesced.labels(self.route_label(ctx.route_name)).inc()
        await self._serve(ctx, answer, "hit-exact", HitRecord("exact", ctx.route_name, decision.key.tenant,
                                                         decision.key.digest))
        return True

    async def _serve(self, ctx: RequestContext, answer: CachedAnswer, status: str, record: HitRecord) -> None:
        ctx.cache_status = status
        ctx.served = Leaf(answer.provider, answer.model)
        ctx.usage = answer.response.usage
        if ctx.chat.stream:
            ctx.stream = replay_stream(answer.response)
        else:
            ctx.response = answer.response
        ctx.state["cache"].store = False
        await self.hits.record(ctx.request_id, record)

    # --- store ---------------------------------------------------------------------------

    async def on_complete(self, ctx: RequestContext) -> None:
        decision: CacheDecision | None = ctx.state.get("cache")
        if decision is None or decision.key is None:
            return
        answer = self._answer_of(ctx, decision)
        if decision.leader:
            self.flights.finish(f"{decision.key.tenant}\x00{decision.key.digest}", answer)
        if answer is None or not decision.store:
            return
        if self.defer is None:
            await self._store(ctx.route_name, decision, answer)
        else:
            self.defer(lambda: self._store_later(ctx.route_name, decision, answer))

    def _store_later(self, route: str, decision: CacheDecision, answer: CachedAnswer) -> None:
        """After the answer is written: into the in-process store at once (in the same turn
        of the loop, so the next identical request finds it), into Redis and the semantic
        tier (which embeds the question first) in a task."""
        assert decision.key is not None
        if isinstance(self.store, MemoryStore) and not (self.semantic is not None and decision.semantic_context):
            try:
                self.store.put_now(decision.key, answer.to_bytes(), decision.ttl_s)
                self.metrics.stored.inc("exact")
            except Exception as exc:
                log.warning("cache write failed (%s): the answer was served but not cached", exc)
            return
        task = asyncio.get_running_loop().create_task(self._store(route, decision, answer))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _store(self, route: str, decision: CacheDecision, answer: CachedAnswer) -> None:
        assert decision.key is not None
        try:
            await self.store.put(decision.key, answer.to_bytes(), decision.ttl_s)
            self.metrics.stored.inc("exact")
            if self.semantic is not None and decision.semantic_context and decision.semantic_text:
                await self.semantic.store(decision.semantic_context, decision.key.tenant, route,
                                          decision.semantic_text, answer, decision.semantic_ttl_s)
                self.metrics.stored.inc("semantic")
        except Exception as exc:
            log.warning("cache write failed (%s): the answer was served but not cached", exc)

    async def close(self) -> None:
        """Waits for the stores still in flight (on shutdown, before Redis is closed)."""
        while self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)

    def _answer_of(self, ctx: RequestContext, decision: CacheDecision) -> CachedAnswer | None:
        """The fresh provider answer worth sharing, or None."""
        assert decision.key is not None
        resp = ctx.response
        if (ctx.status != 200 or resp is None or ctx.served is None or ctx.cache_status not in ("miss", "bypass")
                or resp.stop_reason not in _STORABLE_STOPS):
            return None
        return CachedAnswer(resp, ctx.served.provider, ctx.served.model, ctx.route_name, decision.key.tenant,
                            question=decision.semantic_text)

    def refresh_gauges(self) -> None:
        size = self.store.size_bytes()
        if size is not None:
            self.metrics.bytes.set(size)
            entries: Any = getattr(self.store, "__len__", None)
            if entries is not None:
                self.metrics.entries.labels("exact").set(entries())
        if self.semantic is not None:
            self.metrics.entries.labels("semantic").set(self.semantic.entries())
