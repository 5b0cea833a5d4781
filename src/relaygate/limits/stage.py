"""Stage: token-aware rate limits and budgets for every level a request belongs to.

Before the call one atomic `reserve` over all levels' counters: a request (RPM), its
estimated input tokens + `max_tokens` (TPM, tokens per hour) and its maximum cost
(budgets). After it (streams at their end) `settle` charges what the provider reported,
refunding or adding the difference; a stream cut short is charged for what was sent."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from relaygate.config.models import GatewayConfig
from relaygate.errors import GatewayError
from relaygate.limits import estimate
from relaygate.limits.config import LevelLimits, LevelRef, LimitsConfig, PrincipalLimits
from relaygate.limits.counters import Adjustment, Check, CounterStore
from relaygate.limits.windows import Window, budget_window, openai_duration, rate_window
from relaygate.pipeline.context import Principal, RequestContext
from relaygate.routing.plan import Group, Leaf

log = logging.getLogger("relaygate.limits")
NANO = Decimal(1_000_000_000)  # budgets count nano-dollars: integers, exact to 1e-9
_KIND_TEXT = {"rpm": "requests per minute", "tpm": "tokens per minute", "tokens_per_hour": "tokens per hour"}


class StoreUnavailable(Exception):
    """The shared counter store (Redis) could not be reached."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One check with what the refusal message and headers need to know about it."""

    check: Check
    ref: LevelRef
    kind: str  # rpm | tpm | tokens_per_hour | budget
    window: Window


@dataclass(slots=True)
class Held:
    """A request's reservation, kept in `ctx.state["limits"]` until it is settled."""

    res_id: str
    planned: list[Planned]
    reserved_tokens: int
    reserved_nano: int
    input_estimate: int
    cache_hit: bool
    settled: bool = False
    values: tuple[int, ...] = field(default_factory=tuple)


class LimitsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.shadow = Counter("relaygate_limits_shadow_refusals", "Requests a shadow-mode limit would have refused",
                              ["level", "kind"], registry=r)
        self.refused = Counter("relaygate_limits_refused", "Requests refused, by level and kind",
                               ["level", "kind"], registry=r)
        self.expired = Counter("relaygate_limits_reservations_expired",
                               "Reservations never reconciled (crash, cancelled task), refunded by the sweeper",
                               registry=r)
        self.store_errors = Counter("relaygate_limits_store_errors", "Counter store unreachable, by outcome",
                                    ["outcome"], registry=r)
        self.estimate_ratio = Histogram("relaygate_limits_input_estimate_ratio",
                                        "Pre-call input-token estimate / provider-reported input tokens",
                                        buckets=(0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 4.0),
                                        registry=r)


def nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(rounding="ROUND_CEILING"))


def describe(ref: LevelRef) -> str:
    return f"{ref.level} '{ref.id}'"


def leaves(node: Group | Leaf | None) -> list[Leaf]:
    if node is None:
        return []
    if isinstance(node, Leaf):
        return [node]
    out: list[Leaf] = []
    for child in node.children:
        out.extend(leaves(child))
    return out


class LimitsStage:
    name = "limits"

    def __init__(self, cfg: GatewayConfig, counters: CounterStore, metrics: LimitsMetrics,
                 services: dict[str, Any], refusals: Any = None) -> None:
        self.gcfg = cfg
        self.cfg: LimitsConfig = cfg.limits
        self.counters = counters
        self.metrics = metrics
        self.services = services
        self.refusals = refusals  # the core `relaygate_limit_refusals{reason}` counter
        self.on_settled: list[Any] = []  # callbacks (ctx, held) after settlement: budget alerts
        self.on_budget_refused: list[Any] = []  # callbacks (planned, spent_nano): the 100 % alert

    # --- which levels and counters -------------------------------------------------------

    def levels(self, p: Principal, ctx: RequestContext) -> list[LevelRef]:
        d = self.cfg.defaults
        if isinstance(p.limits, PrincipalLimits):
            refs = list(p.limits.levels)
        else:  # a config-file key: the configured defaults per level
            refs = [LevelRef("key", p.key_id, d.key)]
            if p.team:
                refs.append(LevelRef("team", p.team, d.team))
            if p.org:
                refs.append(LevelRef("org", p.org, d.org))
        user = ctx.metadata.get("user") or p.user
        if user and isinstance(user, str):
            # scoped by tenant: users of different orgs never share a counter
            refs.append(LevelRef("user", f"{p.org or p.key_id}/{user}", d.user))
        return refs

    def plan(self, refs: list[LevelRef], now: float, tokens: int, cost_nano: int) -> list[Planned]:
        out: list[Planned] = []
        for ref in refs:
            lim: LevelLimits = ref.limits
            scope = f"{ref.level}:{ref.id}"
            for kind, limit, amount in (("rpm", lim.rpm, 1), ("tpm", lim.tpm, tokens),
                                        ("tokens_per_hour", lim.tokens_per_hour, tokens)):
                if limit is None:
                    continue
                w = rate_window(kind, now)
                check = Check(f"{kind}:{scope}:{w.tag}", limit, amount, w.ttl_ms(now),
                              not self.cfg.is_shadow(ref.level, kind))
                out.append(Planned(check, ref, kind, w))
            if lim.budget_usd is not None:
                w = budget_window(lim.budget_period, now)
                # at least 1 nano-dollar, so a spent budget refuses even when cost is unknown
                check = Check(f"spend:{scope}:{lim.budget_period}:{w.tag}", nano(lim.budget_usd), max(1, cost_nano),
                              w.ttl_ms(now) + 86_400_000, not self.cfg.is_shadow(ref.level, "budget"))
                out.append(Planned(check, ref, "budget", w))
        return out

    def max_cost(self, ctx: RequestContext, input_tokens: int, max_output: int) -> Decimal:
        pricing = self.services.get("pricing")
        if pricing is None:
            return Decimal(0)
        best = Decimal(0)
        for leaf in leaves(ctx.plan):
            provider = self.gcfg.providers.get(leaf.provider)
            ptype = provider.type if provider is not None else "unknown"
            try:
                cost = Decimal(pricing.max_cost(ptype, leaf.provider, leaf.model, input_tokens, max_output))
            except Exception:  # a model the catalog does not know: no estimate for it
                continue
            best = max(best, cost)
        return best

    # --- the stage ---------------------------------------------------------------------

    async def on_request(self, ctx: RequestContext) -> None:
        p = ctx.principal
        if p is None or p.is_master or ctx.state.get("idempotent_replay"):
            return
        refs = self.levels(p, ctx)
        if not refs:
            return
        now = time.time()
        cache_hit = ctx.response is not None or ctx.stream is not None
        input_estimate = estimate.input_tokens(ctx.chat, self.cfg.chars_per_token)
        max_output = ctx.chat.max_tokens or self.cfg.default_max_tokens
        tokens = 0 if cache_hit else input_estimate + max_output
        needs_cost = any(r.limits.budget_usd is not None for r in refs)
        cost_nano = nano(self.max_cost(ctx, input_estimate, max_output)) if needs_cost and not cache_hit else 0
        planned = self.plan(refs, now, tokens, cost_nano)
        if not planned:
            return
        res_id = f"{ctx.request_id}.{secrets.token_hex(4)}"
        try:
            result = await self.counters.reserve(res_id, [x.check for x in planned], self.cfg.reservation_ttl_s)
        except Exception as exc:
            self._unavailable(planned, exc)
            return
        self._headers(ctx, planned, result.values, now)
        if not result.admitted:
            raise self._refusal(planned, result.values, list(result.over), now)
        for i in result.over:  # shadow limits that would have refused
            x = planned[i]
            self.metrics.shadow.labels(x.ref.level, x.kind).inc()
            log.info("shadow limit: %s %s would have refused request %s", describe(x.ref), x.kind, ctx.request_id)
        ctx.state["limits"] = Held(res_id, planned, tokens, max(1, cost_nano) if needs_cost else 0, input_estimate,
                                   cache_hit, values=result.values)

    def _unavailable(self, planned: list[Planned], exc: Exception) -> None:
        kinds = {x.kind for x in planned}
        closed = []
        if "budget" in kinds and self.cfg.budget_fail_mode == "closed":
            closed.append("budgets")
        if kinds - {"budget"} and self.cfg.rate_limit_fail_mode == "closed":
            closed.append("rate limits")
        log.warning("limits store unreachable (%s): failing %s", type(exc).__name__,
                    "closed for " + " and ".join(closed) if closed else "open")
        if closed:
            self.metrics.store_errors.labels("refused").inc()
            raise GatewayError(503, f"the limits store (Redis) is unreachable and {' and '.join(closed)} fail closed "
                                    f"(limits.budget_fail_mode / limits.rate_limit_fail_mode); retry shortly",
                               "api_error", "limits_unavailable", retry_after=1)
        self.metrics.store_errors.labels("admitted").inc()

    def _refusal(self, planned: list[Planned], values: tuple[int, ...], over: list[int], now: float) -> GatewayError:
        # a budget refusal names the budget; else the rate limit that resets last
        budget = [i for i in over if planned[i].kind == "budget"]
        i = budget[0] if budget else max(over, key=lambda j: planned[j].window.reset_s(now))
        x = planned[i]
        self.metrics.refused.labels(x.ref.level, x.kind).inc()
        retry = x.window.reset_s(now)
        if x.kind == "budget":
            if self.refusals is not None:
                self.refusals.labels("budget").inc()
            for callback in self.on_budget_refused:
                callback(x, values[i])
            lim = x.ref.limits
            spent = Decimal(values[i]) / NANO
            need = Decimal(x.check.amount) / NANO
            return GatewayError(
                429, f"budget exceeded for {describe(x.ref)}: ${spent.normalize():f} of ${lim.budget_usd} per "
                     f"{lim.budget_period} spent or reserved; this request may cost up to ${need.normalize():f}",
                "budget_exceeded", "budget_exceeded", retry_after=retry)
        if self.refusals is not None:
            self.refusals.labels("rate_limit").inc()
        unit = "request" if x.kind == "rpm" else "tokens"
        if x.check.amount > x.check.limit:
            return GatewayError(
                429, f"rate limit exceeded for {describe(x.ref)}: this request alone needs {x.check.amount} tokens "
                     f"(input estimate + max_tokens), more than the limit of {x.check.limit} {_KIND_TEXT[x.kind]}; "
                     f"lower max_tokens", "rate_limit_exceeded", "rate_limit_exceeded")
        return GatewayError(
            429, f"rate limit exceeded for {describe(x.ref)}: {x.check.limit} {_KIND_TEXT[x.kind]}; "
                 f"{values[i]} used in this window, this request needs {x.check.amount} {unit}",
            "rate_limit_exceeded", "rate_limit_exceeded", retry_after=retry)

    def _headers(self, ctx: RequestContext, planned: list[Planned], values: tuple[int, ...], now: float) -> None:
        """OpenAI-style headers from the tightest level (least remaining)."""
        for unit, kinds in (("requests", ("rpm",)), ("tokens", ("tpm", "tokens_per_hour"))):
            rows = [(x.check.limit - values[i] - x.check.amount, i) for i, x in enumerate(planned) if x.kind in kinds]
            if not rows:
                continue
            remaining, i = min(rows)
            x = planned[i]
            h = ctx.response_headers
            h[f"x-ratelimit-limit-{unit}"] = str(x.check.limit)
            h[f"x-ratelimit-remaining-{unit}"] = str(max(0, remaining))
            h[f"x-ratelimit-reset-{unit}"] = openai_duration(x.window.reset_s(now))

    async def on_complete(self, ctx: RequestContext) -> None:
        held: Held | None = ctx.state.get("limits")
        if held is None or held.settled:
            return
        held.settled = True
        tokens = 0 if held.cache_hit else self.actual_tokens(ctx, held)
        cost = 0 if ctx.cost_usd is None else nano(ctx.cost_usd)
        adjustments = []
        for x in held.planned:
            if x.kind in ("tpm", "tokens_per_hour"):
                adjustments.append(Adjustment(x.check.key, tokens - held.reserved_tokens, tokens, x.check.ttl_ms))
            elif x.kind == "budget":
                adjustments.append(Adjustment(x.check.key, cost - x.check.amount, cost, x.check.ttl_ms))
        try:
            live = await self.counters.settle(held.res_id, adjustments)
        except Exception as exc:
            self.metrics.store_errors.labels("unsettled").inc()
            log.warning("could not settle reservation %s (%s); it will be refunded when it expires",
                        held.res_id, type(exc).__name__)
            return
        if not live:
            log.warning("reservation %s had expired before it was settled; charged the actual usage", held.res_id)
        for callback in self.on_settled:
            callback(ctx, held)

    def actual_tokens(self, ctx: RequestContext, held: Held) -> int:
        u = ctx.usage
        reported = u.input_tokens + u.output_tokens if u is not None else 0
        if reported and u is not None:
            if u.input_tokens and not ctx.usage_estimated:
                self.metrics.estimate_ratio.observe(held.input_estimate / u.input_tokens)
            return reported
        if ctx.served is None and not ctx.attempts:
            return 0  # refused or failed before any upstream call
        if ctx.stream is not None and ctx.response is not None:
            # a stream cut short: the prompt was sent, and the text that came back was produced
            chars = sum(len(getattr(p, "text", "") or getattr(p, "arguments", "") or "")
                        for p in ctx.response.content)
            return held.input_estimate + estimate.output_tokens(chars, self.cfg.chars_per_token)
        return 0


async def sweep_once(counters: CounterStore, metrics: LimitsMetrics) -> int:
    expired = await counters.sweep()
    if expired:
        metrics.expired.inc(len(expired))
        log.warning("refunded %d reservation(s) never reconciled (crashed or cancelled requests): %s",
                    len(expired), ", ".join(expired[:5]))
    return len(expired)
