"""Circuit breakers shared by every replica through Redis: each transition is one Lua
script, timed by the Redis server's clock, so replicas agree and a half-open breaker lets
exactly one probe through across all of them."""

from __future__ import annotations

import logging
import os
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relaygate.routing.breaker import BreakerPolicy, BreakerSnapshot, BreakerState, MemoryBreakers

log = logging.getLogger("relaygate.routing")
_REDIS_DOWN = (RedisError, OSError)

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6 "

ALLOW = _NOW + """
local st = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_started')
local state = st[1]
if (not state) or state == 'closed' then return 1 end
if state == 'open' then
  if now - tonumber(st[2]) < tonumber(ARGV[1]) then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_started', now)
  return 1
end
if now - tonumber(st[3] or '0') >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'probe_started', now)
  return 1
end
return 0
"""

# KEYS: state hash, all-calls zset, failures zset. ARGV: failed, window, threshold, rate, id, ttl
RECORD = _NOW + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failed = ARGV[1] == '1'
if not failed and state ~= 'closed' then
  redis.call('HSET', KEYS[1], 'state', 'closed')
  redis.call('DEL', KEYS[2], KEYS[3])
  return 0
end
if failed and state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  return 2
end
if state == 'open' then return 2 end
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if failed then
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  local fails = redis.call('ZCARD', KEYS[3])
  local calls = redis.call('ZCARD', KEYS[2])
  if fails >= tonumber(ARGV[3]) and fails >= tonumber(ARGV[4]) * calls then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
    redis.call('DEL', KEYS[2], KEYS[3])
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
    return 2
  end
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
return 0
"""


class RedisBreakers:
    """While Redis cannot be reached, each replica falls back to its own in-process
    breakers: routing keeps working and failing targets are still skipped locally."""

    def __init__(self, redis: aioredis.Redis, policy: BreakerPolicy, prefix: str = "rg:br:") -> None:
        self.redis = redis
        self.policy = policy
        self.prefix = prefix
        self._allow = redis.register_script(ALLOW)
        self._record = redis.register_script(RECORD)
        self._seen: set[str] = set()
        self._ttl = int(max(policy.window_s, policy.cooldown_s) * 4) + 60
        self._local = MemoryBreakers(policy)
        self._warned_at = -1e9

    def _degraded(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 30.0:
            self._warned_at = now
            log.warning("redis unreachable for circuit breakers, using per-replica state: %s",
                        type(exc).__name__)

    def _keys(self, target: str) -> list[str]:
        base = self.prefix + target
        return [base, base + ":calls", base + ":fails"]

    async def allow(self, target: str) -> bool:
        self._seen.add(target)
        keys = self._keys(target)
        try:
            return bool(await self._allow(keys=keys[:1], args=[self.policy.cooldown_s, self.policy.probe_timeout_s]))
        except _REDIS_DOWN as exc:
            self._degraded(exc)
            return await self._local.allow(target)

    async def _outcome(self, target: str, failed: bool) -> None:
        self._seen.add(target)
        p = self.policy
        try:
            await self._record(keys=self._keys(target), args=[
                "1" if failed else "0", p.window_s, p.failure_threshold, p.failure_rate_threshold,
                os.urandom(8).hex(), self._ttl])
        except _REDIS_DOWN as exc:
            self._degraded(exc)
            await (self._local.record_failure if failed else self._local.record_success)(target)

    async def record_success(self, target: str) -> None:
        await self._outcome(target, False)

    async def record_failure(self, target: str) -> None:
        await self._outcome(target, True)

    async def snapshot(self) -> list[BreakerSnapshot]:
        try:
            return await self._shared_snapshot()
        except _REDIS_DOWN as exc:
            self._degraded(exc)
            return await self._local.snapshot()

    async def _shared_snapshot(self) -> list[BreakerSnapshot]:
        out = []
        for target in sorted(self._seen):
            keys = self._keys(target)
            state, opened = await self.redis.hmget(keys[0], "state", "opened_at")
            fails = await self.redis.zcard(keys[2])
            raw = state.decode() if isinstance(state, bytes) else (state or "closed")
            name: BreakerState = raw if raw in ("open", "half_open") else "closed"  # type: ignore[assignment]
            out.append(BreakerSnapshot(target, name, int(fails), float(opened) if opened and name != "closed" else None))
        return out
