"""Test doubles for the pricing service and cost stage that another module provides
(`relaygate.usage`): a flat price per token, so spend is predictable."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from relaygate.pipeline.context import RequestContext

PRICE_PER_TOKEN = Decimal("0.000001")  # $1 per million tokens


class FlatPricing:
    def max_cost(self, provider_type: str, provider: str, model: str, input_tokens: int,
                 max_output_tokens: int) -> Decimal:
        return (input_tokens + max_output_tokens) * PRICE_PER_TOKEN


class FlatCostStage:
    name = "cost"

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        if ctx.usage is not None and ctx.cost_usd is None:
            ctx.cost_usd = (ctx.usage.input_tokens + ctx.usage.output_tokens) * PRICE_PER_TOKEN


def install_flat_pricing(gw: Any) -> None:
    """Adds the doubles unless the real pricing service and cost stage are installed."""
    if "pricing" not in gw.services:
        gw.services["pricing"] = FlatPricing()
    if not any(s.name == "cost" for s in gw.stages):
        gw.add_stage(FlatCostStage())


async def away_from_window_edge(span_s: int = 60, margin_s: float = 8.0) -> None:
    """Waits until the current fixed window has `margin_s` left, so a race measured in one
    window is not split by a reset."""
    left = span_s - (time.time() % span_s)
    if left < margin_s:
        await asyncio.sleep(left + 0.05)
