"""UsageLimiter: tokens per user per hour, atomic check-and-add, memory and Redis."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from relaygate.agent import MemoryUsageStore, RedisUsageStore, UsageLimiter

from .agent_testkit import FakeClock


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest, redis_client: Any, test_prefix: str) -> Any:
    shared = MemoryUsageStore()
    if request.param == "memory":
        return lambda: shared
    return lambda: RedisUsageStore(redis_client, prefix=test_prefix)


async def test_allows_up_to_the_limit_then_refuses(store_factory: Any) -> None:
    limiter = UsageLimiter(1000, store=store_factory(), clock=FakeClock())
    first = await limiter.try_consume("alice", 600)
    assert first.allowed and first.used == 600 and first.remaining == 400
    refused = await limiter.try_consume("alice", 500)
    assert not refused.allowed and refused.used == 600
    assert 0 < refused.retry_after <= 3600 + 60
    assert (await limiter.try_consume("alice", 400)).allowed
    assert (await limiter.try_consume("bob", 1000)).allowed  # per user
    too_big = await limiter.try_consume("carol", 1001)
    assert not too_big.allowed and math.isinf(too_big.retry_after)


async def test_window_slides_with_time(store_factory: Any) -> None:
    clock = FakeClock(0.0)
    limiter = UsageLimiter(1000, store=store_factory(), clock=clock)
    assert (await limiter.try_consume("u", 700)).allowed
    clock.advance(1800)
    assert (await limiter.try_consume("u", 300)).allowed
    refused = await limiter.try_consume("u", 100)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1800 + 60)  # when the first bucket leaves the hour
    clock.advance(refused.retry_after)
    decision = await limiter.try_consume("u", 100)
    assert decision.allowed and decision.used == 400


async def test_concurrent_requests_never_overshoot(store_factory: Any) -> None:
    limiters = [UsageLimiter(500, store=store_factory(), clock=FakeClock()) for _ in range(4)]
    decisions = await asyncio.gather(*(limiters[i % 4].try_consume("racer", 10) for i in range(100)))
    assert sum(d.allowed for d in decisions) == 50
    assert max(d.used for d in decisions) == 500


async def test_record_adds_unconditionally(store_factory: Any) -> None:
    limiter = UsageLimiter(100, store=store_factory(), clock=FakeClock())
    assert (await limiter.try_consume("u", 90)).allowed
    over = await limiter.record("u", 50)
    assert over.used == 140 and not over.allowed
    assert not (await limiter.try_consume("u", 1)).allowed
