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

# What an in-process entry costs beside its value and digest objects (measured on CPython
# 3.11, tests/cache/test_store.py checks it against tracemalloc): the StoreKey, the _Item and
# its expiry float, the OrderedDict node and its share of the hash table.
_ENTRY_OVERHEAD = 320


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


@dataclass(slots=True)
class _Item:
    value: bytes
    expires: float
    size: int


def entry_size(key: StoreKey, value: bytes) -> int:
    """The memory an entry holds: the value and digest objects (headers included), the
    fixed bookkeeping; tenant and route are interned, shared by every entry of theirs."""
    return sys.getsizeof(value) + sys.getsizeof(key.digest) + _ENTRY_OVERHEAD


class MemoryStore:
    """LRU by bytes: a put that goes over `max_bytes` evicts the least recently used
    entries first; an entry larger than the whole bound is not stored. The bound counts
    what an entry really holds (`entry_size`), so RSS stops growing once it is full.

    Values are copied to an exact-size bytes object: `orjson.dumps` returns bytes whose
    allocation is at least 4 KiB whatever their length, and keeping those would hold
    5-10x the counted bytes."""

    backend = "memory"

    def __init__(self, max_bytes: int, on_evict: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._items: OrderedDict[StoreKey, _Item] = OrderedDict()
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: StoreKey) -> None:
        item = self._items.pop(key)
        self.bytes -= item.size

    async def get(self, key: StoreKey) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item.value

    async def put(self, key: StoreKey, value: bytes, ttl_s: int) -> None:
        self.put_now(key, value, ttl_s)

    def put_now(self, key: StoreKey, value: bytes, ttl_s: int) -> None:
        size = entry_size(key, value)
        if key in self._items:
            self._drop(key)
        if size > self.max_bytes:
            return
        key = StoreKey(sys.intern(key.tenant), sys.intern(key.route), key.digest)
        self._items[key] = _Item(bytes(memoryview(value)), self._clock() + ttl_s, size)
        self.bytes += size
        evicted = 0
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._items))
            self._drop(oldest)
            evicted += 1
        if evicted:
            self.evictions += evicted
            if self._on_evict is not None:
                self._on_evict(evicted)

    async def delete(self, key: StoreKey) -> None:
        if key in self._items:
            self._drop(key)

    async def purge(self, tenant: str | None = None, route: str | None = None) -> int:
        doomed = [k for k in self._items
                  if (tenant is None or k.tenant == tenant) and (route is None or k.route == route)]
        for k in doomed:
            self._drop(k)
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
