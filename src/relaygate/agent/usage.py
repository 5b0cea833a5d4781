"""Tokens per user per hour, checked and added in one atomic step.

A sliding window of `window_s` seconds split into `buckets` buckets (one minute each by
default): usage is the sum of the buckets younger than the window. `try_consume` adds the
tokens only if the total stays within the limit; in Redis that is one Lua script.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class UsageDecision:
    """The outcome of a check-and-add."""

    allowed: bool
    used: int
    """Tokens counted in the window after this call (unchanged when refused)."""
    limit: int
    retry_after: float = 0.0
    """When refused: seconds until enough usage leaves the window for this request."""

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class UsageStore(Protocol):
    """Atomic check-and-add over bucketed usage. Returns (allowed, used, retry_after)."""

    async def consume(
        self, user: str, tokens: int, limit: int, now: float, window_s: float, bucket_s: float, force: bool
    ) -> tuple[bool, int, float]: ...


def _retry_after(buckets: list[tuple[float, int]], used: int, tokens: int, limit: int, now: float,
                 window_s: float, bucket_s: float) -> float:
    if tokens > limit:
        return math.inf
    need = used + tokens - limit
    for start, amount in sorted(buckets):
        need -= amount
        if need <= 0:
            return max(0.0, start + bucket_s + window_s - now)
    return window_s


class MemoryUsageStore:
    """Usage of one process."""

    def __init__(self) -> None:
        self._users: dict[str, dict[float, int]] = {}
        self._lock = threading.Lock()

    async def consume(
        self, user: str, tokens: int, limit: int, now: float, window_s: float, bucket_s: float, force: bool
    ) -> tuple[bool, int, float]:
        with self._lock:
            buckets = self._users.setdefault(user, {})
            oldest = now - window_s
            for start in [s for s in buckets if s + bucket_s <= oldest]:
                del buckets[start]
            used = sum(buckets.values())
            if not force and used + tokens > limit:
                return False, used, _retry_after(list(buckets.items()), used, tokens, limit, now, window_s, bucket_s)
            start = math.floor(now / bucket_s) * bucket_s
            buckets[start] = buckets.get(start, 0) + tokens
            return True, used + tokens, 0.0


_CONSUME = """
local key = KEYS[1]
local tokens = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local bucket = tonumber(ARGV[5])
local force = ARGV[6] == '1'
local oldest = now - window
local flat = redis.call('HGETALL', key)
local used = 0
local live = {}
for i = 1, #flat, 2 do
  local start = tonumber(flat[i])
  if start + bucket <= oldest then
    redis.call('HDEL', key, flat[i])
  else
    used = used + tonumber(flat[i + 1])
    table.insert(live, {start, tonumber(flat[i + 1])})
  end
end
if (not force) and used + tokens > limit then
  if tokens > limit then return {0, used, 'inf'} end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local need = used + tokens - limit
  for _, entry in ipairs(live) do
    need = need - entry[2]
    if need <= 0 then return {0, used, tostring(math.max(0, entry[1] + bucket + window - now))} end
  end
  return {0, used, tostring(window)}
end
local start = math.floor(now / bucket) * bucket
redis.call('HINCRBY', key, string.format('%.6f', start), tokens)
redis.call('EXPIRE', key, math.ceil(window + bucket))
return {1, used + tokens, '0'}
"""


class RedisUsageStore:
    """Usage shared by every replica (one hash per user, one Lua script per check-and-add)."""

    def __init__(self, redis: Any, *, prefix: str = "relaygate:usage:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._consume = redis.register_script(_CONSUME)

    async def consume(
        self, user: str, tokens: int, limit: int, now: float, window_s: float, bucket_s: float, force: bool
    ) -> tuple[bool, int, float]:
        allowed, used, retry = await self._consume(
            keys=[f"{self.prefix}{user}"],
            args=[tokens, limit, repr(now), repr(window_s), repr(bucket_s), "1" if force else "0"],
        )
        retry_text = retry.decode() if isinstance(retry, bytes) else str(retry)
        return bool(int(allowed)), int(used), float(retry_text)


class UsageLimiter:
    """At most `limit_tokens` per user in any `window_s` (default: one hour)."""

    def __init__(
        self,
        limit_tokens: int,
        *,
        window_s: float = 3600.0,
        buckets: int = 60,
        store: UsageStore | None = None,
        clock: Clock = time.time,
    ) -> None:
        if limit_tokens < 0 or buckets < 1 or window_s <= 0:
            raise ValueError("limit_tokens >= 0, buckets >= 1 and window_s > 0 are required")
        self.limit = limit_tokens
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self.store: UsageStore = store or MemoryUsageStore()
        self._clock = clock

    async def try_consume(self, user: str, tokens: int) -> UsageDecision:
        """Add `tokens` to the user's usage if that keeps it within the limit; otherwise refuse
        and add nothing. Concurrent callers can never overshoot the limit together."""
        if tokens < 0:
            raise ValueError("tokens must not be negative")
        allowed, used, retry = await self.store.consume(
            user, tokens, self.limit, self._clock(), self.window_s, self.bucket_s, False
        )
        return UsageDecision(allowed, used, self.limit, retry)

    async def record(self, user: str, tokens: int) -> UsageDecision:
        """Add tokens unconditionally (e.g. the real output size after a call was allowed)."""
        _, used, _ = await self.store.consume(user, tokens, self.limit, self._clock(), self.window_s, self.bucket_s, True)
        return UsageDecision(used <= self.limit, used, self.limit)
