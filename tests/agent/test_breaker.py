"""ToolCircuitBreaker in memory and in a real Redis, with a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relaygate.agent import MemoryBreakerStore, RedisBreakerStore, ToolCircuitBreaker
from relaygate.agent.breaker import BreakerStore

from .agent_testkit import FakeClock


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest, redis_client: Any, test_prefix: str) -> Any:
    shared = MemoryBreakerStore()
    if request.param == "memory":
        return lambda: shared
    return lambda: RedisBreakerStore(redis_client, prefix=test_prefix)


def _breaker(store: BreakerStore, clock: FakeClock) -> ToolCircuitBreaker:
    return ToolCircuitBreaker(threshold=3, reset_timeout_s=30, store=store, clock=clock)


async def test_opens_after_threshold_and_refuses_with_an_actionable_message(store_factory: Any) -> None:
    clock = FakeClock()
    breaker = _breaker(store_factory(), clock)
    for _ in range(2):
        assert (await breaker.allow("search")).allowed
        assert await breaker.record_failure("search") == "closed"
    assert await breaker.record_failure("search") == "open"
    decision = await breaker.allow("search")
    assert not decision.allowed and decision.state == "open"
    assert decision.retry_after == pytest.approx(30)
    assert "`search`" in decision.message and "Do not call it" in decision.message
    assert (await breaker.allow("other_tool")).allowed  # per tool


async def test_resets_after_timeout_through_one_probe(store_factory: Any) -> None:
    clock = FakeClock()
    breaker = _breaker(store_factory(), clock)
    for _ in range(3):
        await breaker.record_failure("db")
    clock.advance(29.5)
    assert not (await breaker.allow("db")).allowed
    clock.advance(1)
    assert await breaker.state("db") == "half_open"
    probe = await breaker.allow("db")
    assert probe.allowed and probe.probe and probe.state == "half_open"
    assert not (await breaker.allow("db")).allowed  # only one probe
    assert await breaker.record_success("db") == "closed"
    assert (await breaker.allow("db")).allowed
    assert await breaker.state("db") == "closed"


async def test_failed_probe_reopens_for_another_timeout(store_factory: Any) -> None:
    clock = FakeClock()
    breaker = _breaker(store_factory(), clock)
    for _ in range(3):
        await breaker.record_failure("db")
    clock.advance(31)
    assert (await breaker.allow("db")).probe
    assert await breaker.record_failure("db") == "open"
    clock.advance(29)
    assert not (await breaker.allow("db")).allowed
    clock.advance(2)
    assert (await breaker.allow("db")).probe


async def test_a_probe_that_never_reports_expires(store_factory: Any) -> None:
    clock = FakeClock()
    breaker = _breaker(store_factory(), clock)
    for _ in range(3):
        await breaker.record_failure("db")
    clock.advance(31)
    assert (await breaker.allow("db")).probe
    clock.advance(31)  # the probing caller crashed
    assert (await breaker.allow("db")).probe


async def test_success_resets_the_failure_count(store_factory: Any) -> None:
    breaker = _breaker(store_factory(), FakeClock())
    for _ in range(5):
        await breaker.record_failure("flaky")
        await breaker.record_failure("flaky")
        await breaker.record_success("flaky")
    assert await breaker.state("flaky") == "closed"


async def test_concurrent_callers_get_exactly_one_probe(store_factory: Any) -> None:
    clock = FakeClock()
    replicas = [_breaker(store_factory(), clock) for _ in range(5)]  # Redis: five "replicas"
    for _ in range(3):
        await replicas[0].record_failure("t")
    clock.advance(31)
    decisions = await asyncio.gather(*(replicas[i % 5].allow("t") for i in range(50)))
    assert sum(d.allowed for d in decisions) == 1


async def test_concurrent_failures_open_exactly_at_the_threshold(store_factory: Any) -> None:
    clock = FakeClock()
    breaker = ToolCircuitBreaker(threshold=25, reset_timeout_s=30, store=store_factory(), clock=clock)
    states = await asyncio.gather(*(breaker.record_failure("t") for _ in range(24)))
    assert set(states) == {"closed"}
    assert await breaker.record_failure("t") == "open"


async def test_replicas_sharing_redis_agree(redis_client: Any, test_prefix: str) -> None:
    clock = FakeClock()
    first = _breaker(RedisBreakerStore(redis_client, prefix=test_prefix), clock)
    second = _breaker(RedisBreakerStore(redis_client, prefix=test_prefix), clock)
    for _ in range(3):
        await first.record_failure("shared")
    assert not (await second.allow("shared")).allowed
    clock.advance(31)
    assert (await second.allow("shared")).probe
    await second.record_success("shared")
    assert (await first.allow("shared")).allowed


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ToolCircuitBreaker(threshold=0)
