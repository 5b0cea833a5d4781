"""The counter store's contract, the same for the in-process and the Redis backend."""

from __future__ import annotations

import asyncio
import random

from relaygate.limits.counters import Adjustment, Check, CounterStore


def tpm(key: str, limit: int, amount: int, enforce: bool = True) -> Check:
    return Check(key, limit, amount, 60_000, enforce)


async def test_all_levels_or_nothing(counters: CounterStore) -> None:
    ok = await counters.reserve("r1", [tpm("key", 100, 60), tpm("team", 1000, 60)], 60)
    assert ok.admitted and ok.values == (0, 0)
    # the key level has no room: nothing is reserved at the team level either
    refused = await counters.reserve("r2", [tpm("key", 100, 60), tpm("team", 1000, 60)], 60)
    assert not refused.admitted and refused.over == (0,)
    assert await counters.get(["key", "team"]) == [60, 60]


async def test_shadow_check_admits_and_reports(counters: CounterStore) -> None:
    r = await counters.reserve("r1", [tpm("key", 10, 50, enforce=False), tpm("team", 100, 50)], 60)
    assert r.admitted and r.over == (0,)
    assert await counters.get(["key", "team"]) == [50, 50]


async def test_settle_refunds_and_charges_the_difference(counters: CounterStore) -> None:
    await counters.reserve("r1", [tpm("k", 1000, 500)], 60)
    assert await counters.settle("r1", [Adjustment("k", 120 - 500, 120, 60_000)])
    assert await counters.get(["k"]) == [120]
    await counters.reserve("r2", [tpm("k", 1000, 100)], 60)
    assert await counters.settle("r2", [Adjustment("k", 150 - 100, 150, 60_000)])
    assert await counters.get(["k"]) == [270]
    # settling twice does not apply the delta twice: the second sees an expired record
    assert not await counters.settle("r2", [Adjustment("k", 0, 0, 60_000)])
    assert await counters.get(["k"]) == [270]


async def test_expired_reservations_are_swept_once(counters: CounterStore) -> None:
    await counters.reserve("lost", [tpm("k", 1000, 400)], 0.05)
    await counters.reserve("kept", [tpm("k", 1000, 100)], 60)
    await asyncio.sleep(0.1)
    assert await counters.sweep() == ["lost"]
    assert await counters.sweep() == []
    assert await counters.get(["k"]) == [100]
    # a late settlement of the swept reservation charges the actual amount, not the delta
    assert not await counters.settle("lost", [Adjustment("k", 50 - 400, 50, 60_000)])
    assert await counters.get(["k"]) == [150]


async def test_first_is_won_once(counters: CounterStore) -> None:
    results = await asyncio.gather(*(counters.first("alert:x:50", 60) for _ in range(50)))
    assert sum(results) == 1


async def test_race_never_over_admits(counters: CounterStore) -> None:
    """300 concurrent reservations of random size against two levels: what is admitted
    never exceeds either limit, and every refusal was needed (the level was nearly full)."""
    rng = random.Random(7)
    sizes = [rng.randint(1, 400) for _ in range(300)]

    async def one(i: int) -> tuple[bool, int]:
        await asyncio.sleep(0)
        r = await counters.reserve(f"r{i}", [tpm("key", 20_000, sizes[i]), tpm("org", 15_000, sizes[i])], 60)
        return r.admitted, sizes[i]

    results = await asyncio.gather(*(one(i) for i in range(300)))
    admitted = sum(s for ok, s in results if ok)
    key, org = await counters.get(["key", "org"])
    assert key == org == admitted
    assert admitted <= 15_000
    assert admitted > 15_000 - 400  # refused only when the next one did not fit
