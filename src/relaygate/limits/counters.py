"""Hot counters for limits and budgets behind one interface: in-process, or Redis (Lua).

One `reserve` call checks and reserves every level's counters at once — all or nothing —
so two requests can never both pass a check that only one of them fits:
- Redis: one Lua script per request (Redis runs scripts one at a time);
- memory: plain Python with no `await` between the checks and the increments.

Windows are fixed (counter key = scope + window start). Fixed windows make reservations
and their reconciliation exact: a reservation adds to one counter and its reconciliation
adjusts that same counter, so the counter is exactly what was admitted in that window.
The price is the known boundary burst (up to twice a limit across two adjacent windows);
a sliding-window approximation would blur the exactness the races test.

Every reservation is also recorded with a deadline; `settle` removes it and applies the
difference between actual and reserved amounts, while `sweep` refunds reservations whose
deadline passed (a crashed or cancelled request). Whichever of the two removes the record
first acts, so a reservation is refunded or settled exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Check:
    """Reserve `amount` on counter `key` if it stays within `limit` (no limit: < 0)."""

    key: str
    limit: int
    amount: int
    ttl_ms: int
    enforce: bool = True


@dataclass(frozen=True, slots=True)
class Reservation:
    admitted: bool
    # counter values before this reservation, one per check
    values: tuple[int, ...]
    # indices of checks that did not fit (enforced refusals, or shadow ones when admitted)
    over: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Adjustment:
    """At settlement: `delta` when the reservation is still live (actual - reserved),
    `amount` (actual) when it had already expired and been refunded."""

    key: str
    delta: int
    amount: int
    ttl_ms: int


class CounterStore(Protocol):
    async def reserve(self, res_id: str, checks: list[Check], hold_s: float) -> Reservation: ...

    async def settle(self, res_id: str, adjustments: list[Adjustment]) -> bool: ...

    async def sweep(self, limit: int = 100) -> list[str]: ...

    async def get(self, keys: list[str]) -> list[int]: ...

    async def first(self, key: str, ttl_s: float) -> bool:
        """True for exactly one caller per key until it expires (alerts fire once)."""
        ...


@dataclass
class _Counter:
    value: int
    expires_at: float


@dataclass
class _Held:
    deadline: float
    amounts: list[tuple[str, int]] = field(default_factory=list)


class MemoryCounters:
    """One process's counters; every method is free of `await`, so each runs atomically."""

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self._counters: dict[str, _Counter] = {}
        self._held: dict[str, _Held] = {}
        self._flags: dict[str, float] = {}

    def _value(self, key: str, now: float) -> int:
        c = self._counters.get(key)
        if c is None or c.expires_at <= now:
            return 0
        return c.value

    def _add(self, key: str, amount: int, ttl_ms: int, now: float) -> None:
        c = self._counters.get(key)
        if c is None or c.expires_at <= now:
            self._counters[key] = _Counter(amount, now + ttl_ms / 1000)
        else:
            c.value += amount

    def seed(self, key: str, value: int, expires_at: float) -> None:
        """Restores a counter kept elsewhere (budget spend from the database at start)."""
        self._counters[key] = _Counter(value, expires_at)

    async def reserve(self, res_id: str, checks: list[Check], hold_s: float) -> Reservation:
        now = self.clock()
        values = tuple(self._value(c.key, now) for c in checks)
        over = tuple(i for i, c in enumerate(checks) if c.limit >= 0 and values[i] + c.amount > c.limit)
        if any(checks[i].enforce for i in over):
            return Reservation(False, values, tuple(i for i in over if checks[i].enforce))
        held = _Held(now + hold_s)
        for c in checks:
            if c.amount:
                self._add(c.key, c.amount, c.ttl_ms, now)
                held.amounts.append((c.key, c.amount))
        self._held[res_id] = held
        if len(self._counters) > 200_000:
            self._expire(now)
        return Reservation(True, values, over)

    async def settle(self, res_id: str, adjustments: list[Adjustment]) -> bool:
        now = self.clock()
        live = self._held.pop(res_id, None) is not None
        for a in adjustments:
            change = a.delta if live else a.amount
            if change:
                self._add(a.key, change, a.ttl_ms, now)
        return live

    async def sweep(self, limit: int = 100) -> list[str]:
        now = self.clock()
        expired = [rid for rid, h in self._held.items() if h.deadline <= now][:limit]
        for rid in expired:
            for key, amount in self._held.pop(rid).amounts:
                c = self._counters.get(key)
                if c is not None and c.expires_at > now:
                    c.value -= amount
        return expired

    async def get(self, keys: list[str]) -> list[int]:
        now = self.clock()
        return [self._value(k, now) for k in keys]

    async def first(self, key: str, ttl_s: float) -> bool:
        now = self.clock()
        if self._flags.get(key, 0) > now:
            return False
        self._flags[key] = now + ttl_s
        return True

    def _expire(self, now: float) -> None:
        for k in [k for k, c in self._counters.items() if c.expires_at <= now]:
            del self._counters[k]


# KEYS: counter keys..., the reservations zset, the reservation's hash
# ARGV: res_id, deadline_ms, n, record_ttl_ms, then per counter: limit, amount, ttl_ms, enforce(0/1)
_RESERVE = """
local n = tonumber(ARGV[3])
local values, over, refused = {}, {}, {}
for i = 1, n do
  local base = 4 + (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local amount = tonumber(ARGV[base + 2])
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  values[i] = cur
  if limit >= 0 and cur + amount > limit then
    table.insert(over, i - 1)
    if ARGV[base + 4] == '1' then table.insert(refused, i - 1) end
  end
end
if #refused > 0 then return {0, values, refused} end
local held = {}
for i = 1, n do
  local base = 4 + (i - 1) * 4
  local amount = tonumber(ARGV[base + 2])
  if amount ~= 0 then
    local v = redis.call('INCRBY', KEYS[i], amount)
    if v == amount then
      redis.call('PEXPIRE', KEYS[i], ARGV[base + 3])
    end
    table.insert(held, KEYS[i])
    table.insert(held, amount)
  end
end
if #held > 0 then
  redis.call('HSET', KEYS[n + 2], unpack(held))
  redis.call('PEXPIRE', KEYS[n + 2], ARGV[4])
  redis.call('ZADD', KEYS[n + 1], ARGV[2], ARGV[1])
end
return {1, values, over}
"""

# KEYS: the reservations zset, the reservation's hash, counter keys...
# ARGV: res_id, then per counter: delta, amount, ttl_ms
_SETTLE = """
local live = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for i = 3, #KEYS do
  local base = 1 + (i - 3) * 3
  local change = tonumber(live == 1 and ARGV[base + 1] or ARGV[base + 2])
  if change ~= 0 then
    local v = redis.call('INCRBY', KEYS[i], change)
    if v == change then
      redis.call('PEXPIRE', KEYS[i], ARGV[base + 3])
    end
  end
end
return live
"""

# KEYS: the reservations zset; ARGV: now_ms, limit, hash key prefix
_SWEEP = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local h = ARGV[3] .. id
  local held = redis.call('HGETALL', h)
  for j = 1, #held, 2 do
    if redis.call('EXISTS', held[j]) == 1 then
      redis.call('DECRBY', held[j], held[j + 1])
    end
  end
  redis.call('DEL', h)
end
return ids
"""


class RedisCounters:
    """Counters shared by every replica. Keys share the `{rg}` hash tag, so the scripts
    also run on a Redis Cluster (one slot)."""

    PREFIX = "{rg}:"

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._sweep = redis.register_script(_SWEEP)
        self._zset = self.PREFIX + "reservations"
        self._held = self.PREFIX + "res:"

    def k(self, key: str) -> str:
        return self.PREFIX + key

    async def reserve(self, res_id: str, checks: list[Check], hold_s: float) -> Reservation:
        keys = [self.k(c.key) for c in checks] + [self._zset, self._held + res_id]
        # the record outlives its deadline so the sweeper still finds what to refund
        args: list[Any] = [res_id, int((time.time() + hold_s) * 1000), len(checks), int((hold_s + 86400) * 1000)]
        for c in checks:
            args += [c.limit, c.amount, c.ttl_ms, 1 if c.enforce else 0]
        ok, values, over = await self._reserve(keys=keys, args=args)
        return Reservation(bool(ok), tuple(int(v) for v in values), tuple(int(i) for i in over))

    async def settle(self, res_id: str, adjustments: list[Adjustment]) -> bool:
        keys = [self._zset, self._held + res_id] + [self.k(a.key) for a in adjustments]
        args: list[Any] = [res_id]
        for a in adjustments:
            args += [a.delta, a.amount, a.ttl_ms]
        return bool(await self._settle(keys=keys, args=args))

    async def sweep(self, limit: int = 100) -> list[str]:
        ids = await self._sweep(keys=[self._zset], args=[int(time.time() * 1000), limit, self._held])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def get(self, keys: list[str]) -> list[int]:
        if not keys:
            return []
        values = await self.redis.mget([self.k(k) for k in keys])
        return [int(v) if v is not None else 0 for v in values]

    async def first(self, key: str, ttl_s: float) -> bool:
        return bool(await self.redis.set(self.k(key), b"1", nx=True, px=max(1, int(ttl_s * 1000))))


def open_redis(url: str, max_connections: int = 64) -> Any:
    """A client whose pool waits for a free connection instead of failing: redis-py's
    default pool raises `MaxConnectionsError` past 100 concurrent commands, which under a
    burst would look like an unreachable Redis and trip the fail modes."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5,
                                                    socket_connect_timeout=2, socket_timeout=5)
    return aioredis.Redis(connection_pool=pool)
