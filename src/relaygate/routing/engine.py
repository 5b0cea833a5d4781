"""Runs a compiled route: walks the strategy tree, retries, consults breakers, and keeps
the record of every attempt. The network call itself is the caller's `attempt`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from relaygate.config.models import CircuitBreakerConfig, RetryConfig
from relaygate.errors import UpstreamError
from relaygate.routing.breaker import Breakers
from relaygate.routing.conditions import choose
from relaygate.routing.plan import Group, Leaf, Node

T = TypeVar("T")
BREAKER_OPEN = "breaker_open"


@dataclass(slots=True)
class AttemptRecord:
    provider: str
    model: str
    status: int
    message: str
    latency_ms: float
    skipped: bool = False


@dataclass(slots=True)
class Routed(Generic[T]):
    value: T
    leaf: Leaf


class AllTargetsFailed(Exception):
    """Every target failed or was skipped; `last` is the final error."""

    def __init__(self, last: UpstreamError) -> None:
        super().__init__(str(last))
        self.last = last


def backoff_delay(retry: RetryConfig, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with +-jitter, at least the upstream's Retry-After, capped."""
    b = retry.backoff
    delay = min(b.max_ms, b.base_ms * (2**attempt)) / 1000
    delay *= 1 + rng.uniform(-b.jitter, b.jitter)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(min(delay, b.max_ms / 1000))


class Router:
    def __init__(
        self,
        breakers: Breakers,
        retry: RetryConfig,
        breaker_cfg: CircuitBreakerConfig,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.breakers = breakers
        self.retry = retry
        self.retry_codes = frozenset(retry.on_status_codes)
        self.breaker_enabled = breaker_cfg.enabled
        self.breaker_codes = frozenset(breaker_cfg.on_status_codes)
        self.rng = rng or random.Random()
        self.sleep = sleep

    async def run(
        self,
        plan: Node,
        attempt: Callable[[Leaf], Awaitable[T]],
        facts: dict[str, Any],
        records: list[AttemptRecord],
    ) -> Routed[T]:
        try:
            return await self._node(plan, attempt, facts, records)
        except UpstreamError as exc:
            raise AllTargetsFailed(exc) from None

    async def _node(self, node: Node, attempt: Callable[[Leaf], Awaitable[T]], facts: dict[str, Any],
                    records: list[AttemptRecord]) -> Routed[T]:
        if isinstance(node, Leaf):
            return await self._leaf(node, attempt, records)
        if node.mode == "conditional":
            name = choose(node.conditions, node.default, facts)
            index = node.names.index(name) if name in node.names else 0
            return await self._node(node.children[index], attempt, facts, records)
        order = self._order(node)
        last: UpstreamError | None = None
        for child in order:
            try:
                return await self._node(child, attempt, facts, records)
            except UpstreamError as exc:
                last = exc
                if exc.error_type != BREAKER_OPEN and exc.status not in node.on_status_codes:
                    raise
                if node.mode == "single":
                    raise
        assert last is not None
        raise last

    def _order(self, group: Group) -> list[Node]:
        if group.mode != "loadbalance" or len(group.children) < 2:
            return list(group.children)
        # Weighted order without replacement: the first pick follows the weights, the
        # rest are where the request goes if that pick fails with a fallback status.
        pool = [(c, w) for c, w in zip(group.children, group.weights, strict=True) if w > 0]
        order: list[Node] = []
        while pool:
            total = sum(w for _, w in pool)
            x = self.rng.uniform(0, total)
            for i, (child, w) in enumerate(pool):
                x -= w
                if x <= 0 or i == len(pool) - 1:
                    order.append(child)
                    pool.pop(i)
                    break
        return order

    async def _leaf(self, leaf: Leaf, attempt: Callable[[Leaf], Awaitable[T]],
                    records: list[AttemptRecord]) -> Routed[T]:
        key = leaf.key
        for n in range(self.retry.attempts + 1):
            if self.breaker_enabled and not await self.breakers.allow(key):
                records.append(AttemptRecord(leaf.provider, leaf.model, 503, "circuit open: skipped", 0.0, True))
                raise UpstreamError(503, f"{key}: circuit open", error_type=BREAKER_OPEN)
            started = time.perf_counter()
            try:
                value = await attempt(leaf)
            except UpstreamError as exc:
                records.append(AttemptRecord(leaf.provider, leaf.model, exc.status, exc.message,
                                             (time.perf_counter() - started) * 1000))
                if self.breaker_enabled and exc.status in self.breaker_codes:
                    await self.breakers.record_failure(key)
                if exc.status in self.retry_codes and n < self.retry.attempts:
                    await self.sleep(backoff_delay(self.retry, n, exc.retry_after, self.rng))
                    continue
                raise
            records.append(AttemptRecord(leaf.provider, leaf.model, 200, "ok", (time.perf_counter() - started) * 1000))
            if self.breaker_enabled:
                await self.breakers.record_success(key)
            return Routed(value, leaf)
        raise AssertionError("unreachable")
