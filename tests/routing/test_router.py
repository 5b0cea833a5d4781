"""Strategy trees, retry/backoff, and breakers (with a fake clock)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from relaygate.config import parse_config
from relaygate.config.models import CircuitBreakerConfig, RetryConfig
from relaygate.errors import UpstreamError
from relaygate.routing.breaker import BreakerPolicy, MemoryBreakers
from relaygate.routing.engine import AllTargetsFailed, AttemptRecord, Router, backoff_delay
from relaygate.routing.plan import Leaf, compile_route


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plan(route: dict):  # type: ignore[no-untyped-def,type-arg]
    providers = {p: {"type": "openai-compatible", "base_url": "http://x"} for p in ("a", "b")}
    return compile_route(parse_config({"providers": providers, "routes": {"r": route}}).routes["r"])


def router(attempts: int = 0, threshold: int = 5, clock: FakeClock | None = None,
           sleeps: list[float] | None = None) -> Router:
    async def fake_sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    breakers = MemoryBreakers(BreakerPolicy(threshold, 30, 60, 30), clock or FakeClock())
    return Router(breakers, RetryConfig(attempts=attempts), CircuitBreakerConfig(failure_threshold=threshold),
                  random.Random(1), fake_sleep)


def scripted(outcomes: dict[str, list[int]]):  # type: ignore[no-untyped-def]
    """An attempt function: each target answers its statuses in order (200 = success)."""
    calls: list[str] = []

    async def attempt(leaf: Leaf) -> str:
        calls.append(leaf.key)
        seq = outcomes.get(leaf.key, [200])
        status = seq.pop(0) if len(seq) > 1 else seq[0]
        if status != 200:
            raise UpstreamError(status, f"{leaf.key} failed", retry_after=None)
        return leaf.key

    return attempt, calls


FOUR_LEVEL = {"strategy": "fallback", "targets": [
    {"provider": "a", "model": "x"}, {"provider": "b", "model": "x"},
    {"provider": "a", "model": "y"}, {"provider": "b", "model": "y"}]}


async def test_fallback_walks_the_four_levels_in_order() -> None:
    attempt, calls = scripted({"a/x": [429], "b/x": [503], "a/y": [502]})
    records: list[AttemptRecord] = []
    routed = await router().run(plan(FOUR_LEVEL), attempt, {}, records)
    assert routed.value == "b/y"
    assert calls == ["a/x", "b/x", "a/y", "b/y"]
    assert [r.status for r in records] == [429, 503, 502, 200]


async def test_fallback_stops_on_a_status_not_in_its_list() -> None:
    attempt, calls = scripted({"a/x": [400]})
    with pytest.raises(AllTargetsFailed) as err:
        await router().run(plan(FOUR_LEVEL), attempt, {}, [])
    assert err.value.last.status == 400 and calls == ["a/x"]


async def test_all_failed_raises_with_every_attempt_recorded() -> None:
    attempt, _ = scripted({k: [503] for k in ("a/x", "b/x", "a/y", "b/y")})
    records: list[AttemptRecord] = []
    with pytest.raises(AllTargetsFailed):
        await router().run(plan(FOUR_LEVEL), attempt, {}, records)
    assert len(records) == 4


async def test_retry_on_same_target_with_backoff_honouring_retry_after() -> None:
    sleeps: list[float] = []
    calls = 0

    async def attempt(leaf: Leaf) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise UpstreamError(429, "slow down", retry_after=2.5 if calls == 2 else None)
        return "ok"

    route = {"targets": [{"provider": "a", "model": "x"}]}
    routed = await router(attempts=2, sleeps=sleeps).run(plan(route), attempt, {}, [])
    assert routed.value == "ok" and calls == 3
    assert 0.15 <= sleeps[0] <= 0.25  # base 200 ms +-25 %
    assert sleeps[1] == 2.5  # Retry-After wins over the shorter backoff


def test_backoff_is_exponential_jittered_and_capped() -> None:
    retry = RetryConfig(attempts=10)
    rng = random.Random(3)
    delays = [backoff_delay(retry, n, None, rng) for n in range(8)]
    assert all(0.75 * min(8, 0.2 * 2**n) <= d <= 1.25 * min(8, 0.2 * 2**n) for n, d in enumerate(delays))
    assert max(delays) <= 8.0
    assert backoff_delay(retry, 0, 60, rng) == 8.0  # even Retry-After is capped at max_ms


async def test_loadbalance_follows_weights_and_falls_through() -> None:
    route = {"strategy": "loadbalance", "targets": [{"provider": "a", "model": "x", "weight": 0.8},
                                                     {"provider": "b", "model": "x", "weight": 0.2}]}
    attempt, _ = scripted({})
    r = router()
    counts = Counter([(await r.run(plan(route), attempt, {}, [])).value for _ in range(2000)])
    assert 0.75 < counts["a/x"] / 2000 < 0.85
    attempt, calls = scripted({"a/x": [503]})
    r = router(threshold=10_000)
    for _ in range(20):
        assert (await r.run(plan(route), attempt, {}, [])).value == "b/x"


async def test_conditional_routes_on_metadata_and_default() -> None:
    route = {"strategy": {"mode": "conditional", "default": "cheap",
                          "conditions": [{"query": {"metadata.plan": {"$in": ["pro", "team"]}}, "then": "best"},
                                         {"query": {"complexity": {"$gte": 0.8}}, "then": "best"}]},
             "targets": [{"name": "cheap", "provider": "a", "model": "mini"},
                         {"name": "best", "provider": "b", "model": "large"}]}
    attempt, _ = scripted({})
    r = router()
    assert (await r.run(plan(route), attempt, {"metadata": {"plan": "pro"}}, [])).value == "b/large"
    assert (await r.run(plan(route), attempt, {"metadata": {"plan": "free"}, "complexity": 0.2}, [])).value == "a/mini"
    assert (await r.run(plan(route), attempt, {"complexity": 0.9}, [])).value == "b/large"


async def test_nested_groups() -> None:
    route = {"strategy": "fallback", "targets": [
        {"strategy": "loadbalance", "targets": [{"provider": "a", "model": "x"}, {"provider": "a", "model": "y"}]},
        {"provider": "b", "model": "z"}]}
    attempt, calls = scripted({"a/x": [503], "a/y": [503]})
    routed = await router(threshold=100).run(plan(route), attempt, {}, [])
    assert routed.value == "b/z" and sorted(calls[:2]) == ["a/x", "a/y"]


async def test_breaker_opens_skips_without_calling_then_half_opens_and_closes() -> None:
    clock = FakeClock()
    r = router(threshold=3, clock=clock)
    route = {"strategy": "fallback", "targets": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "x"}]}
    attempt, calls = scripted({"a/x": [503]})
    for _ in range(3):
        await r.run(plan(route), attempt, {}, [])
    assert calls.count("a/x") == 3
    calls.clear()
    records: list[AttemptRecord] = []
    assert (await r.run(plan(route), attempt, {}, records)).value == "b/x"
    assert calls == ["b/x"] and records[0].skipped  # open: no network call at all
    clock.now += 61  # cooldown over: one probe
    attempt_ok, calls_ok = scripted({})
    assert (await r.run(plan(route), attempt_ok, {}, [])).value == "a/x"
    snap = {s.target: s.state for s in await r.breakers.snapshot()}
    assert snap["a/x"] == "closed"


async def test_failed_probe_reopens_the_breaker() -> None:
    clock = FakeClock()
    b = MemoryBreakers(BreakerPolicy(1, 30, 60, 30), clock)
    await b.record_failure("t")
    assert not await b.allow("t")
    clock.now += 60
    assert await b.allow("t")  # the probe
    await b.record_failure("t")
    assert not await b.allow("t")
    clock.now += 59
    assert not await b.allow("t")  # the cooldown restarted at the failed probe


async def test_failures_outside_the_window_do_not_open() -> None:
    clock = FakeClock()
    b = MemoryBreakers(BreakerPolicy(3, 30, 60, 30), clock)
    for _ in range(2):
        await b.record_failure("t")
    clock.now += 31
    await b.record_failure("t")
    assert await b.allow("t")


async def test_half_open_lets_exactly_one_probe_through_under_100_concurrent_requests() -> None:
    clock = FakeClock()
    r = router(threshold=1, clock=clock)
    route = {"strategy": "fallback", "targets": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "x"}]}
    a_calls = 0
    release = asyncio.Event()

    async def attempt(leaf: Leaf) -> str:
        nonlocal a_calls
        if leaf.key == "a/x":
            a_calls += 1
            await release.wait()  # the probe is slow: everyone else arrives while it runs
            return "a"
        await asyncio.sleep(0)
        return "b"

    await r.breakers.record_failure("a/x")  # open
    clock.now += 61  # cooldown elapsed: half-open
    tasks = [asyncio.create_task(r.run(plan(route), attempt, {}, [])) for _ in range(100)]
    await asyncio.sleep(0.05)
    release.set()
    results = [t.value for t in await asyncio.gather(*tasks)]
    assert a_calls == 1
    assert results.count("a") == 1 and results.count("b") == 99


async def test_random_errors_below_the_rate_threshold_never_trip() -> None:
    clock = FakeClock()
    b = MemoryBreakers(BreakerPolicy(5, 30, 60, 30, 0.5), clock)
    for i in range(1000):  # 10 % failures, spread out
        if i % 10 == 0:
            await b.record_failure("t")
        else:
            await b.record_success("t")
        clock.now += 0.01
    assert await b.allow("t")
    for _ in range(5):  # now it is hard down: failures dominate the window quickly
        await b.record_failure("t")
    still_closed = await b.allow("t")
    clock.now += 31  # the successes age out of the window
    for _ in range(5):
        await b.record_failure("t")
    assert still_closed and not await b.allow("t")
