"""The live request log: the last N requests, kept in memory for `/admin/requests` and
the dashboard (the durable record is the usage ledger). Each request stores one tuple;
the dicts are built only when someone looks."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from relaygate.pipeline.context import RequestContext

_FIELDS = ("ts", "request_id", "key", "team", "route", "provider", "model", "status", "attempts",
           "degraded", "cache", "latency_ms", "input_tokens", "output_tokens", "cost_usd")


class RecentRequests:
    name = "recent"
    observes_refusals = True

    def __init__(self, size: int = 200) -> None:
        self.entries: deque[tuple[Any, ...]] = deque(maxlen=size)

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        p, served, usage = ctx.principal, ctx.served, ctx.usage
        self.entries.append((
            time.time(), ctx.request_id, p.key_name if p else None, p.team if p else None, ctx.route_name,
            served.provider if served else None, served.model if served else None, ctx.status,
            ctx.upstream_calls, ctx.degraded, ctx.cache_status, ctx.elapsed_ms(),
            usage.input_tokens if usage else 0, usage.output_tokens if usage else 0, ctx.cost_usd,
        ))

    def latest(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for entry in list(self.entries)[-limit:][::-1]:
            row = dict(zip(_FIELDS, entry, strict=True))
            row["ts"] = round(row["ts"], 3)
            row["latency_ms"] = round(row["latency_ms"], 2)
            row["cost_usd"] = str(row["cost_usd"]) if row["cost_usd"] is not None else None
            out.append(row)
        return out
