"""The same breaker behaviour in memory and in Redis, including the probe race across
two independent Redis clients (two replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from relaygate.routing.breaker import BreakerPolicy, Breakers, MemoryBreakers
from relaygate.state.redis_breakers import RedisBreakers

POLICY = BreakerPolicy(failure_threshold=3, window_s=30, cooldown_s=0.3, probe_timeout_s=30,
                       failure_rate_threshold=0.5)


@pytest.fixture(params=["memory", "redis"])
async def breakers(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Breakers]:
    if request.param == "memory":
        yield MemoryBreakers(POLICY)
        return
    client = aioredis.Redis.from_url(redis_url)
    yield RedisBreakers(client, POLICY)
    await client.aclose()


async def test_trips_after_threshold_then_probes_then_closes(breakers: Breakers) -> None:
    for _ in range(3):
        assert await breakers.allow("t")
        await breakers.record_failure("t")
    assert not await breakers.allow("t")
    await asyncio.sleep(0.35)
    assert await breakers.allow("t")  # the probe
    assert not await breakers.allow("t")  # only one
    await breakers.record_success("t")
    assert await breakers.allow("t")
    snap = {s.target: s.state for s in await breakers.snapshot()}
    assert snap["t"] == "closed"


async def test_mostly_successful_target_stays_closed(breakers: Breakers) -> None:
    for i in range(60):
        if i % 10 == 0:
            await breakers.record_failure("t")
        else:
            await breakers.record_success("t")
    assert await breakers.allow("t")


async def test_one_probe_across_two_replicas_under_100_concurrent_checks(redis_url: str) -> None:
    a, b = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    replica_a, replica_b = RedisBreakers(a, POLICY), RedisBreakers(b, POLICY)
    for _ in range(3):
        await replica_a.record_failure("shared")
    assert not await replica_b.allow("shared")  # replica B sees A's verdict
    await asyncio.sleep(0.35)
    results = await asyncio.gather(*(r.allow("shared") for r in [replica_a, replica_b] * 50))
    assert sum(results) == 1
    await a.aclose()
    await b.aclose()


async def test_redis_down_falls_back_to_per_replica_breakers() -> None:
    # Nothing listens on port 1: every Redis call fails with a connection error.
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    breakers = RedisBreakers(client, POLICY)
    assert await breakers.allow("down")  # fails open rather than failing the request
    for _ in range(3):
        await breakers.record_failure("down")
    assert not await breakers.allow("down")  # and still protects the target locally
    assert {s.target: s.state for s in await breakers.snapshot()}["down"] == "open"
    await client.aclose()
