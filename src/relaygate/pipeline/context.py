"""The per-request value every stage reads and extends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from relaygate.formats.types import ChatRequest, ChatResponse, StreamEvent, Usage
from relaygate.routing.engine import AttemptRecord
from relaygate.routing.plan import Group, Leaf


@dataclass(slots=True)
class Principal:
    """Who is calling: the master key, a config key, or a virtual key from the database."""

    key_id: str
    key_name: str
    is_master: bool = False
    team: str | None = None
    org: str | None = None
    user: str | None = None
    models: frozenset[str] | None = None  # None = every route
    route_config: dict[str, Any] | None = None  # a key's own route (per-user routing)
    allow_request_config: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: Any = None  # the key's limits, read by the limits stage


@dataclass(slots=True)
class StreamBody:
    """A committed upstream stream: events already decoded, then the rest of the body.
    `passthrough`, when set, gives the upstream's own bytes for the events decoded so far,
    which the client gets instead of their encoding (same format, request unchanged)."""

    first_events: list[StreamEvent]
    rest: AsyncIterator[list[StreamEvent]]
    release: Callable[[], None]
    passthrough: Callable[[], bytes] | None = None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    format: str  # inbound wire format: "openai" | "anthropic"
    body: dict[str, Any]
    chat: ChatRequest
    headers: Mapping[str, str]  # answers lower-case names (aiohttp CIMultiDictProxy, or the front dict)
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    principal: Principal | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    route_name: str = ""
    plan: Group | None = None
    cache_status: str = "miss"  # hit-exact | hit-semantic | miss | bypass
    cache_control: str | None = None  # from x-relaygate-cache
    attempts: list[AttemptRecord] = field(default_factory=list)
    served: Leaf | None = None
    degraded: bool = False
    response: ChatResponse | None = None
    raw_response: bytes | None = None  # upstream bytes when passed through unchanged
    stream: StreamBody | None = None
    usage: Usage | None = None
    usage_estimated: bool = False
    cost_usd: Decimal | None = None
    status: int = 200
    error: str | None = None
    ttft_ms: float | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    # stage-owned state (limits reservation, cache key, ...), by stage name
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def upstream_calls(self) -> int:
        return sum(1 for a in self.attempts if not a.skipped)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
