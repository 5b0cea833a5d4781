"""`UsageRecord`: one client request as the ledger keeps it (refusals and cache hits
included), built from the finished `RequestContext`."""

from __future__ import annotations

import time
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec
import orjson

from relaygate.config.models import GatewayConfig
from relaygate.pipeline.context import RequestContext
from relaygate.usage.cost import provider_type
from relaygate.usage.pricing import NANO

_MAX_METADATA = 4096


def to_nanos(cost: Decimal | None) -> int:
    """Dollars to integer nano-dollars (what the database stores: sums stay exact)."""
    return int((cost or Decimal(0)).quantize(NANO) / NANO)


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * NANO).quantize(NANO)


@lru_cache(maxsize=16)
def utc_day(day_number: int) -> str:
    """`YYYY-MM-DD` of a day counted from the epoch (`ts // 86400`), cached: every record of
    a day asks for the same string."""
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * 86400))


# Both are msgspec structs with `gc=False`: the collector never tracks them. A record lives
# in memory until its journal segment is flushed to the database (a second or more). As
# dataclasses each request left six containers until then (the record, its attempts, their
# `__dict__`s, the list): they counted toward the youngest generation's next collection
# (threshold 20,000, server/run.py), and every collection before the flush walked them.
# Now a record leaves a tuple of attempts, which the collector untracks the first time it
# sees it, and its metadata dict, which it never tracks (strings and numbers only).
# Safe because a record never takes part in a reference cycle: it holds strings, numbers,
# a tuple of attempts and the request's metadata (parsed JSON, which has no cycles).
class AttemptUsage(msgspec.Struct, gc=False):
    """One upstream call. `billed` when the provider answered (and so charged); its
    usage and cost are known only then."""

    provider: str
    model: str
    status: int
    latency_ms: float
    skipped: bool = False
    message: str = ""
    billed: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nusd: int = 0


class UsageRecord(msgspec.Struct, gc=False):
    request_id: str
    ts: float
    status: int
    key_id: str | None = None
    key_name: str | None = None
    team: str | None = None
    org: str | None = None
    user: str | None = None
    thread: str | None = None
    feature: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    format: str = "openai"
    requested_model: str = ""
    route: str = ""
    provider: str | None = None
    provider_type: str | None = None
    model: str | None = None
    attempts: int = 0
    attempt_list: tuple[AttemptUsage, ...] = ()
    cache_status: str = "miss"
    degraded: bool = False
    stream: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nusd: int = 0
    estimated: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    error: str | None = None
    trace_id: str | None = None

    @property
    def day(self) -> str:
        return utc_day(int(self.ts // 86400))

    @property
    def cost_usd(self) -> Decimal:
        return from_nanos(self.cost_nusd)

    @property
    def refused(self) -> bool:
        """Answered by the gateway itself with a client error, before any upstream call
        (bad key, model not allowed, rate limit, budget, unknown route)."""
        return 400 <= self.status < 500 and self.attempts == 0 and not self.cache_status.startswith("hit")

    def to_json(self) -> bytes:
        """One journal line, newline included."""
        return _ENCODER.encode(self) + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str) -> UsageRecord:
        return _RECORD_DECODER.decode(raw)

    def event(self) -> dict[str, Any]:
        """The `usage.request` webhook payload: the record with its cost as a decimal string."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        data["cost_usd"] = f"{self.cost_usd:.9f}"
        data["day"] = self.day
        return data


_ENCODER = msgspec.json.Encoder()
_RECORD_DECODER = msgspec.json.Decoder(UsageRecord)


def attempts_json(attempts: tuple[AttemptUsage, ...]) -> str:
    """The `attempt_list` column: the attempts as a JSON array."""
    return _ENCODER.encode(attempts).decode()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def record_from(ctx: RequestContext, cfg: GatewayConfig) -> UsageRecord:
    p = ctx.principal
    meta = ctx.metadata or {}
    metadata = meta if not meta or len(orjson.dumps(meta)) <= _MAX_METADATA else {"truncated": True}
    u = ctx.usage
    cost_nusd = to_nanos(ctx.cost_usd)
    attempts = [
        AttemptUsage(a.provider, a.model, a.status, round(a.latency_ms, 3), a.skipped, a.message[:300])
        for a in ctx.attempts
    ]
    if ctx.served is not None:
        # The attempt that answered is the last one not skipped: it carries the usage.
        for a in reversed(attempts):
            if not a.skipped and a.provider == ctx.served.provider and a.model == ctx.served.model:
                a.billed = True
                if u is not None:
                    a.input_tokens, a.output_tokens = u.input_tokens, u.output_tokens
                    a.cache_read_tokens, a.cache_write_tokens = u.cache_read_tokens, u.cache_write_tokens
                    a.reasoning_tokens = u.reasoning_tokens
                a.cost_nusd = cost_nusd
                break
    served = ctx.served
    return UsageRecord(
        request_id=ctx.request_id,
        ts=ctx.started_wall,
        status=ctx.status,
        key_id=p.key_id if p else None,
        key_name=p.key_name if p else None,
        team=p.team if p else None,
        org=p.org if p else None,
        user=_text(meta.get("user")) or (p.user if p else None),
        thread=_text(meta.get("thread")),
        feature=_text(meta.get("feature")),
        metadata=metadata,
        format=ctx.format,
        requested_model=ctx.chat.model,
        route=ctx.route_name,
        provider=served.provider if served else None,
        provider_type=provider_type(cfg, served.provider) if served else None,
        model=served.model if served else None,
        attempts=ctx.upstream_calls,
        attempt_list=tuple(attempts),
        cache_status=ctx.cache_status,
        degraded=ctx.degraded,
        stream=ctx.chat.stream,
        input_tokens=u.input_tokens if u else 0,
        output_tokens=u.output_tokens if u else 0,
        cache_read_tokens=u.cache_read_tokens if u else 0,
        cache_write_tokens=u.cache_write_tokens if u else 0,
        reasoning_tokens=u.reasoning_tokens if u else 0,
        cost_nusd=cost_nusd,
        estimated=ctx.usage_estimated,
        latency_ms=round(ctx.elapsed_ms(), 3),
        ttft_ms=round(ctx.ttft_ms, 3) if ctx.ttft_ms is not None else None,
        error=ctx.error[:500] if ctx.error else None,
        trace_id=ctx.trace_id,
    )
