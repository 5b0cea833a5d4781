"""Prometheus metrics with bounded label sets (route and provider names come from the
config; anything a client invents is folded into `other`; model and team labels keep
their first `MAX_LABEL_VALUES` values and fold the rest into `other`)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from relaygate.pipeline.context import RequestContext
from relaygate.routing.breaker import BreakerSnapshot

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
MAX_LABEL_VALUES = 200


class BoundedLabel:
    """The first `limit` distinct values pass; later ones become `other` (a client that
    sends a new model name per request must not grow the registry without bound)."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None or value == "":
            return "none"
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class Counts:
    """A labelled counter incremented in plain Python and added to Prometheus when
    `/metrics` is rendered (`flush`): prometheus_client takes a lock for every `inc()`, and a
    request makes about a dozen. Label values come bounded (`BoundedLabel`)."""

    __slots__ = ("metric", "_pending")

    def __init__(self, metric: Counter) -> None:
        self.metric = metric
        self._pending: dict[tuple[str, ...], float] = {}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        self._pending[values] = self._pending.get(values, 0.0) + amount

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for values, amount in pending.items():
            self.metric.labels(*values).inc(amount)


class _Pending:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bucket with amount <= bound
        self.sum += amount


class Buckets:
    """A labelled histogram observed in plain Python (one bisection, no lock) and added to
    Prometheus when `/metrics` is rendered (`flush`), like `Counts`. Call sites read as with a
    labelled metric: `buckets(*label_values).observe(amount)`."""

    __slots__ = ("metric", "bounds", "_children")

    def __init__(self, metric: Histogram, buckets: tuple[float, ...]) -> None:
        self.metric = metric
        self.bounds = (*buckets, math.inf)
        self._children: dict[tuple[str, ...], _Pending] = {}

    def __call__(self, *values: str) -> _Pending:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Pending(self.bounds)
        return child

    def flush(self) -> None:
        for values, pending in self._children.items():
            if not any(pending.counts):
                continue
            target = self.metric.labels(*values)
            # prometheus_client keeps per-bucket (not cumulative) counts and the sum
            for i, n in enumerate(pending.counts):
                if n:
                    target._buckets[i].inc(n)
                    pending.counts[i] = 0
            target._sum.inc(pending.sum)
            pending.sum = 0.0


class GatewayMetrics:
    def __init__(self, known_routes: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.known_routes = known_routes
        r = self.registry
        self.requests = Counter("relaygate_requests", "Client requests", ["route", "status", "format"], registry=r)
        self.latency = Histogram("relaygate_request_duration_seconds", "Request latency (to the last byte)",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("relaygate_time_to_first_token_seconds", "Stream time to first token",
                              ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.attempts = Counter("relaygate_upstream_attempts", "Upstream calls",
                                ["provider", "model", "status"], registry=r)
        self.fallbacks = Counter("relaygate_fallbacks", "Requests served by a target other than the first",
                                 ["route"], registry=r)
        self.skips = Counter("relaygate_breaker_skips", "Targets skipped because their breaker was open",
                             ["target"], registry=r)
        self.breaker_state = Gauge("relaygate_breaker_state", "Breaker state (0 closed, 1 half-open, 2 open)",
                                   ["target"], registry=r)
        self.tokens = Counter("relaygate_tokens", "Tokens by kind", ["provider", "model", "kind"], registry=r)
        self.team_tokens = Counter("relaygate_team_tokens", "Tokens by team and kind", ["team", "kind"],
                                   registry=r)
        self.cost = Counter("relaygate_cost_usd", "Spend in USD", ["provider", "model", "team"], registry=r)
        self.refusals = Counter("relaygate_limit_refusals", "Requests refused by limits or budgets",
                                ["reason"], registry=r)
        self.cache = Counter("relaygate_cache_lookups", "Cache lookups by result", ["result", "route"], registry=r)
        self.cache_hit_ratio = Gauge("relaygate_cache_hit_ratio", "Cache hits over lookups since start",
                                     registry=r)
        self.upstream_errors = Counter("relaygate_upstream_errors", "Failed upstream calls by provider and status",
                                       ["provider", "status"], registry=r)
        self.provider_fallbacks = Counter("relaygate_provider_fallbacks",
                                          "Requests a provider failed that another target then served",
                                          ["provider"], registry=r)
        self.request_errors = Counter("relaygate_request_errors", "Requests answered with an error, by status class",
                                      ["route", "class"], registry=r)
        self.ledger_records = Counter("relaygate_ledger_records", "Usage records journaled", registry=r)
        self.ledger_flushed = Counter("relaygate_ledger_flushed", "Usage records written to the database",
                                      registry=r)
        self.ledger_flush_errors = Counter("relaygate_ledger_flush_errors", "Failed ledger flushes (retried)",
                                           registry=r)
        self.ledger_backlog = Gauge("relaygate_ledger_backlog_bytes", "Journal bytes not yet in the database",
                                    registry=r)
        self.alerts_sent = Counter("relaygate_alerts", "Alert and webhook deliveries by event and outcome",
                                   ["event", "outcome"], registry=r)
        # what is only read at scrape time: gauges refreshed then, per-request counts added then
        self.on_render: list[Callable[[], None]] = []
        self._latency = self.buckets(self.latency, _LATENCY_BUCKETS)
        self._ttft = self.buckets(self.ttft, _LATENCY_BUCKETS)
        self._requests = self.counts(self.requests)
        self._request_errors = self.counts(self.request_errors)
        self._attempts = self.counts(self.attempts)
        self._upstream_errors = self.counts(self.upstream_errors)
        self._skips = self.counts(self.skips)
        self._cache = self.counts(self.cache)
        self._tokens = self.counts(self.tokens)
        self._team_tokens = self.counts(self.team_tokens)
        self._cost = self.counts(self.cost)
        self.model_label = BoundedLabel()
        self.team_label = BoundedLabel()
        self._hits = 0
        self._lookups = 0

    def counts(self, metric: Counter) -> Counts:
        """`metric` counted in Python between scrapes (see `Counts`)."""
        counts = Counts(metric)
        self.on_render.append(counts.flush)
        return counts

    def buckets(self, metric: Histogram, bounds: tuple[float, ...]) -> Buckets:
        """`metric` observed in Python between scrapes (see `Buckets`)."""
        buckets = Buckets(metric, bounds)
        self.on_render.append(buckets.flush)
        return buckets

    def route_label(self, route: str) -> str:
        return route if route in self.known_routes else ("direct" if "/" in route else "other")

    def observe(self, ctx: RequestContext) -> None:
        route = self.route_label(ctx.route_name)
        self._requests.inc(route, str(ctx.status), ctx.format)
        if ctx.status >= 400:
            self._request_errors.inc(route, f"{ctx.status // 100}xx")
        self._latency(route).observe(ctx.elapsed_ms() / 1000)
        if ctx.ttft_ms is not None:
            self._ttft(route).observe(ctx.ttft_ms / 1000)
        for a in ctx.attempts:
            model = self.model_label(a.model)
            if a.skipped:
                self._skips.inc(f"{a.provider}/{model}")
            else:
                self._attempts.inc(a.provider, model, str(a.status))
                if a.status >= 400:
                    self._upstream_errors.inc(a.provider, str(a.status))
        if ctx.degraded:
            self.fallbacks.labels(route).inc()
            failed = {a.provider for a in ctx.attempts if not a.skipped and a.status >= 400}
            for provider in failed:
                self.provider_fallbacks.labels(provider).inc()
        if ctx.cache_status != "bypass":
            self._cache.inc(ctx.cache_status, route)
            self._lookups += 1
            if ctx.cache_status.startswith("hit"):
                self._hits += 1
        if ctx.status == 429 and ctx.upstream_calls == 0:
            reason = "budget" if "budget" in (ctx.error or "").lower() else "rate_limit"
            self.refusals.labels(reason).inc()
        if ctx.usage is not None and ctx.served is not None and not ctx.cache_status.startswith("hit"):
            p, m = ctx.served.provider, self.model_label(ctx.served.model)
            team = self.team_label(ctx.principal.team if ctx.principal else None)
            u = ctx.usage
            for kind, value in (("input", u.input_tokens), ("output", u.output_tokens),
                                ("cache_read", u.cache_read_tokens), ("cache_write", u.cache_write_tokens),
                                ("reasoning", u.reasoning_tokens)):
                if value:
                    self._tokens.inc(p, m, kind, amount=value)
                    self._team_tokens.inc(team, kind, amount=value)
            if ctx.cost_usd:
                self._cost.inc(p, m, team, amount=float(ctx.cost_usd))

    def render(self, breakers: list[BreakerSnapshot]) -> bytes:
        for refresh in self.on_render:
            refresh()
        for b in breakers:
            self.breaker_state.labels(b.target).set(_STATE_VALUE[b.state])
        if self._lookups:
            self.cache_hit_ratio.set(self._hits / self._lookups)
        return generate_latest(self.registry)


class MetricsStage:
    """First in the list so its `on_complete` runs last, seeing the final outcome."""

    name = "metrics"
    observes_refusals = True

    def __init__(self, metrics: GatewayMetrics, defer: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.metrics = metrics
        self.defer = defer  # Gateway.after_answers: observed once the answer is written

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        if self.defer is None:
            self.metrics.observe(ctx)
        else:
            self.defer(lambda: self.metrics.observe(ctx))
