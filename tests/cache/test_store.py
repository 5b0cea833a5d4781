"""The same tests against both exact-cache backends, then the LRU's own bound."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from relaygate.cache.store import AnswerStore, MemoryStore, RedisStore, StoreKey, entry_size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: Any, redis_url: str) -> AsyncIterator[AnswerStore]:
    if request.param == "memory":
        yield MemoryStore(1 << 20)
        return
    client = aioredis.Redis.from_url(redis_url)
    yield RedisStore(client, prefix="rg:test:x:")
    await client.aclose()


def k(tenant: str = "org:a", route: str = "r", digest: str = "d1") -> StoreKey:
    return StoreKey(tenant, route, digest)


async def test_get_put_delete(store: AnswerStore) -> None:
    assert await store.get(k()) is None
    await store.put(k(), b"answer", 60)
    assert await store.get(k()) == b"answer"
    await store.put(k(), b"newer", 60)
    assert await store.get(k()) == b"newer"
    await store.delete(k())
    assert await store.get(k()) is None


async def test_tenants_and_routes_are_separate_keys(store: AnswerStore) -> None:
    await store.put(k("org:a"), b"a", 60)
    assert await store.get(k("org:b")) is None
    assert await store.get(k("org:a", "other")) is None


async def test_purge_by_tenant_route_or_both(store: AnswerStore) -> None:
    for tenant in ("org:a", "org:b", "key:*?[x]"):  # glob characters in a name purge nothing else
        for route in ("r1", "r2"):
            await store.put(k(tenant, route), tenant.encode(), 60)
    assert await store.purge("key:*?[x]") == 2
    assert await store.purge("org:a", "r1") == 1
    assert await store.get(k("org:a", "r2")) == b"org:a"
    assert await store.purge(route="r2") == 2
    assert await store.get(k("org:b", "r1")) == b"org:b"
    assert await store.purge() == 1
    assert await store.get(k("org:b", "r1")) is None


async def test_redis_entries_expire_with_their_ttl(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix="rg:test:x:")
    await store.put(k(), b"v", 30)
    ttl = await client.ttl(store._name(k()))
    assert 0 < ttl <= 30
    await client.aclose()


async def test_memory_entries_expire_with_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(1 << 20, clock=clock)
    await store.put(k(), b"v", 30)
    clock.now += 29
    assert await store.get(k()) == b"v"
    clock.now += 2
    assert await store.get(k()) is None
    assert store.bytes == 0


async def test_lru_stays_within_its_byte_bound_and_evicts_least_recently_used() -> None:
    evicted: list[int] = []
    probe = MemoryStore(1 << 20)
    await probe.put(k(digest="d0"), b"x" * 900, 60)
    bound = int(probe.bytes * 10.5)  # room for ten such entries, not eleven
    store = MemoryStore(bound, on_evict=evicted.append)
    for i in range(10):
        await store.put(k(digest=f"d{i}"), b"x" * 900, 60)
    assert store.bytes <= bound and len(store) == 10
    assert await store.get(k(digest="d0")) is not None  # d0 is now the most recent
    await store.put(k(digest="d10"), b"x" * 900, 60)
    await store.put(k(digest="d11"), b"x" * 900, 60)
    assert store.bytes <= bound
    assert await store.get(k(digest="d0")) is not None
    assert await store.get(k(digest="d1")) is None and await store.get(k(digest="d2")) is None
    assert store.evictions == sum(evicted) == 2
    for i in range(200):
        await store.put(k(digest=f"many{i}"), b"y" * (i * 7 % 1000), 60)
        assert store.bytes <= bound
    assert store.bytes == sum(entry_size(name, value) for name, value in store._values.items())


async def test_stored_answers_leave_the_collector_nothing() -> None:
    """An entry is a string, bytes and a float: storing answers allocates no container the
    collector would count toward its next collection or walk in it (as tuples, two per
    answer set off most young collections under load)."""
    store = MemoryStore(10_000_000)
    keys = [k(tenant=f"t{i % 3}", digest=f"d{i}") for i in range(1000)]
    values = [b"v" * 100 for _ in range(1000)]
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for key, value in zip(keys, values, strict=True):
            store.put_now(key, value, 60)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert len(store) == 1000
    assert grown < 10, f"{grown} container objects for 1,000 stored answers"
    assert await store.get(k(tenant="t1", digest="d1")) == b"v" * 100


async def test_tenants_and_routes_with_separators_in_their_names_stay_apart() -> None:
    store = MemoryStore(1 << 20)
    await store.put(StoreKey("a:b", "c", "d"), b"one", 60)
    await store.put(StoreKey("a", "b:c", "d"), b"two", 60)
    await store.put(StoreKey("1:1:a", "", "d"), b"three", 60)
    assert await store.get(StoreKey("a:b", "c", "d")) == b"one"
    assert await store.get(StoreKey("a", "b:c", "d")) == b"two"
    assert await store.purge(tenant="a") == 1
    assert await store.get(StoreKey("a:b", "c", "d")) == b"one"
    assert await store.purge(route="") == 1
    assert await store.purge(tenant="a:b", route="c") == 1
    assert len(store) == 0


async def test_an_entry_larger_than_the_bound_is_not_stored() -> None:
    store = MemoryStore(1000)
    await store.put(k(digest="small"), b"s" * 100, 60)
    await store.put(k(digest="huge"), b"h" * 5000, 60)
    assert await store.get(k(digest="huge")) is None
    assert await store.get(k(digest="small")) is not None


async def test_the_bound_counts_the_memory_an_entry_really_holds() -> None:
    """What the process holds for N entries (tracemalloc) is what the bound counts, within
    20 %, for orjson-made values (whose buffers are 4 KiB whatever their length) and for
    tenant/route strings made per request."""
    store = MemoryStore(1 << 30)
    n = 5000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            value = orjson.dumps({"answer": "The quick brown fox. " * (10 + i % 20), "n": i})
            digest = hashlib.blake2b(str(i).encode(), digest_size=20).hexdigest()
            await store.put(StoreKey("org:" + "acme", "route-" + "bench", digest), value, 60)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == n
    assert 0.8 <= held / store.bytes <= 1.2, (held / n, store.bytes / n)
