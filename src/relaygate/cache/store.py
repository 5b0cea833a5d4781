"""Where exact-cache answers live: an in-process LRU bounded by bytes, or Redis (shared by
every replica). One interface, one test suite for both."""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis.asyncio as aioredis  # imported only when Redis is configured (it pulls in OpenTelemetry)

# What an in-process entry costs beside its value and name strings (measured on CPython
# 3.11, tests/cache/test_store.py checks it against tracemalloc): the OrderedDict node and
# its share of both hash tables, the expiry float.
_ENTRY_OVERHEAD = 150


def tag(value: str) -> str:
    """A tenant or route name as a short, glob-safe token for store keys."""
    return hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class StoreKey:
    tenant: str
    route: str
    digest: str


class AnswerStore(Protocol):
    """Bytes by key with a TTL; purged by tenant and/or route."""

    backend: str

    async def get(self, key: StoreKey) -> bytes | None: ...

    async def put(self, key: StoreKey, value: bytes, ttl_s: int) -> None: ...

    async def delete(self, key: StoreKey) -> None: ...

    async def purge(self, tenant: str | None = None, route: str | None = None) -> int: ...

    def size_bytes(self) -> int | None: ...


def entry_size(name: str, value: bytes) -> int:
    """The memory an entry holds: its value and name (`_name`) objects, headers included,
    and the fixed bookkeeping."""
    return sys.getsizeof(value) + sys.getsizeof(name) + _ENTRY_OVERHEAD


def _name(key: StoreKey) -> str:
    """An entry's name in the in-process store: one string, unambiguous whatever the
    tenant and route hold (their lengths come first)."""
    return f"{len(key.tenant)}:{len(key.route)}:{key.tenant}{key.route}{key.digest}"


def _tenant_route(name: str) -> tuple[str, str]:
    tenant_len, route_len, rest = name.split(":", 2)
    t, r = int(tenant_len), int(route_len)
    return rest[:t], rest[t:t + r]


class MemoryStore:
    """LRU by bytes: a put that goes over `max_bytes` evicts the least recently used
    entries first; an entry larger than the whole bound is not stored. The bound counts
    what an entry really holds (`entry_size`), so RSS stops growing once it is full.

    Values are copied to an exact-size bytes object: `orjson.dumps` returns bytes whose
    allocation is at least 4 KiB whatever their length, and keeping those would hold
    5-10x the counted bytes.

    An entry is a string name, its bytes and an expiry float: no container object per
    entry, so the cache neither burdens the garbage collector nor triggers it. (As a key
    tuple and an entry tuple, two container allocations per answer stored were what set
    off most young collections under load; at 1,000 requests in flight each one walked
    ~48,000 live objects, ~55 ms in which nothing else ran.)"""

    backend = "memory"

    def __init__(self, max_bytes: int, on_evict: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._values: OrderedDict[str, bytes] = OrderedDict()  # least recently used first
        self._expiry: dict[str, float] = {}  # clock time
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self._values)

    def _drop(self, name: str) -> None:
        del self._expiry[name]
        self.bytes -= entry_size(name, self._values.pop(name))

    async def get(self, key: StoreKey) -> bytes | None:
        name = _name(key)
        value = self._values.get(name)
        if value is None:
            return None
        if self._expiry[name] <= self._clock():
            self._drop(name)
            return None
        self._values.move_to_end(name)
        return value

    async def put(self, key: StoreKey, value: bytes, ttl_s: int) -> None:
        self.put_now(key, value, ttl_s)

    def put_now(self, key: StoreKey, value: bytes, ttl_s: int) -> None:
        name = _name(key)
        if name in self._values:
            self._drop(name)
        size = entry_size(name, value)
        if size > self.max_bytes:
            return
        self._values[name] = bytes(memoryview(value))
        self._expiry[name] = self._clock() + ttl_s
        self.bytes += size
        evicted = 0
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._values)))
            evicted += 1
        if evicted:
            self.evictions += evicted
            if self._on_evict is not None:
                self._on_evict(evicted)

    async def delete(self, key: StoreKey) -> None:
        name = _name(key)
        if name in self._values:
            self._drop(name)

    async def purge(self, tenant: str | None = None, route: str | None = None) -> int:
        doomed = []
        for name in self._values:
            name_tenant, name_route = _tenant_route(name)
            if (tenant is None or name_tenant == tenant) and (route is None or name_route == route):
                doomed.append(name)
        for name in doomed:
            self._drop(name)
        return len(doomed)

    def size_bytes(self) -> int | None:
        return self.bytes


class RedisStore:
    """Entries as Redis strings with a TTL under `<prefix><tenant tag>:<route tag>:<digest>`,
    so a purge by tenant or route is one SCAN pattern. Memory is bounded by Redis itself
    (`maxmemory` with an LRU policy)."""

    backend = "redis"

    def __init__(self, redis: aioredis.Redis, prefix: str = "rg:cache:x:") -> None:
        self.redis = redis
        self.prefix = prefix

    def _name(self, key: StoreKey) -> str:
        return f"{self.prefix}{tag(key.tenant)}:{tag(key.route)}:{key.digest}"

    async def get(self, key: StoreKey) -> bytes | None:
        value = await self.redis.get(self._name(key))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def put(self, key: StoreKey, value: bytes, ttl_s: int) -> None:
        await self.redis.set(self._name(key), value, ex=ttl_s)

    async def delete(self, key: StoreKey) -> None:
        await self.redis.delete(self._name(key))

    async def purge(self, tenant: str | None = None, route: str | None = None) -> int:
        pattern = f"{self.prefix}{tag(tenant) if tenant else '*'}:{tag(route) if route else '*'}:*"
        removed = 0
        batch: list[bytes] = []
        async for name in self.redis.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                removed += int(await self.redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(await self.redis.unlink(*batch))
        return removed

    def size_bytes(self) -> int | None:
        return None
