"""The cost stage: last in the list, so its `on_complete` runs first and every later
`on_complete` (limits settling budgets, the ledger, metrics) sees `ctx.cost_usd`."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from decimal import Decimal

from relaygate.config.models import GatewayConfig
from relaygate.formats.types import ChatRequest, ChatResponse, Usage
from relaygate.pipeline.context import RequestContext
from relaygate.routing.plan import Leaf, first_leaf
from relaygate.usage.pricing import ZERO, Pricing

log = logging.getLogger("relaygate.usage")


def provider_type(cfg: GatewayConfig, provider: str) -> str:
    p = cfg.providers.get(provider)
    return p.type if p is not None else "openai-compatible"


def estimate_tokens(text_chars: int) -> int:
    return math.ceil(text_chars / 4)


def _prompt_chars(chat: ChatRequest) -> int:
    total = sum(len(p.text) for p in chat.system)
    for m in chat.messages:
        for part in m.content:
            total += len(getattr(part, "text", "") or getattr(part, "arguments", "") or "")
    return total


def estimate_usage(chat: ChatRequest, response: ChatResponse | None) -> Usage:
    """When a provider reported no usage (a stream cut early, a provider without usage in
    streams): about four characters a token, as the limits stage reserves."""
    out_chars = 0
    if response is not None:
        out_chars = len(response.text) + sum(len(c.arguments) for c in response.tool_calls)
    return Usage(input_tokens=estimate_tokens(_prompt_chars(chat)), output_tokens=estimate_tokens(out_chars))


def priced_leaf(ctx: RequestContext) -> Leaf | None:
    if ctx.served is not None:
        return ctx.served
    if ctx.cache_status.startswith("hit") and ctx.plan is not None:
        return first_leaf(ctx.plan)
    return None


class CostStage:
    name = "cost"

    def __init__(self, cfg: GatewayConfig, pricing: Pricing) -> None:
        self.cfg = cfg
        self.pricing = pricing
        self.hit_ratio = Decimal(str(cfg.cache.hit_cost_ratio))
        self.unpriced: set[str] = set()

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        if ctx.usage is None and ctx.response is not None:
            ctx.usage = ctx.response.usage
        leaf = priced_leaf(ctx)
        if leaf is None:
            ctx.cost_usd = ZERO  # refused or failed before any provider answered
            return
        usage = ctx.usage
        if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0):
            if ctx.response is None and ctx.stream is None:
                ctx.cost_usd = ZERO
                return
            usage = ctx.usage = estimate_usage(ctx.chat, ctx.response)
            ctx.usage_estimated = True
        at = datetime.fromtimestamp(ctx.started_wall, UTC)
        cost = self.pricing.cost(provider_type(self.cfg, leaf.provider), leaf.provider, leaf.model, usage, at)
        if cost is None:
            ctx.state["cost_unpriced"] = True
            if leaf.key not in self.unpriced:
                self.unpriced.add(leaf.key)
                log.warning("no price for %s (catalog or pricing.models): its requests cost 0", leaf.key)
            cost = ZERO
        if ctx.cache_status.startswith("hit"):
            cost *= self.hit_ratio
        ctx.cost_usd = cost
