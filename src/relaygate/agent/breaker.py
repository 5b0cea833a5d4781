"""Per-tool circuit breaker: stop calling a tool that keeps failing, probe it again later.

`closed` (calls pass; consecutive failures are counted) -> `open` after `threshold` failures
(calls refused for `reset_timeout_s`) -> `half_open` (exactly one probe call passes) ->
`closed` on the probe's success, `open` again on its failure. State lives in memory or in
Redis (one hash per tool, every transition a Lua script, so all replicas agree). Time comes
from an injectable clock and is passed into the scripts, so tests can move it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

BreakerState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """Whether a tool call may run now. When refused, `message` is written for the model."""

    allowed: bool
    state: BreakerState
    retry_after: float = 0.0
    probe: bool = False
    """This call is the half-open probe: its outcome closes or re-opens the breaker."""
    message: str = ""


class BreakerStore(Protocol):
    """Atomic breaker transitions. Each returns (state, retry_after, probe, allowed)."""

    async def allow(self, tool: str, now: float, reset_timeout: float) -> tuple[str, float, bool, bool]: ...

    async def failure(self, tool: str, now: float, threshold: int) -> str: ...

    async def success(self, tool: str) -> str: ...

    async def state(self, tool: str, now: float, reset_timeout: float) -> str: ...


@dataclass(slots=True)
class _Entry:
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probe_at: float = -1.0


class MemoryBreakerStore:
    """Breaker state of one process (each method is one critical section)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    async def allow(self, tool: str, now: float, reset_timeout: float) -> tuple[str, float, bool, bool]:
        with self._lock:
            entry = self._entries.setdefault(tool, _Entry())
            if entry.state == "closed":
                return "closed", 0.0, False, True
            if entry.state == "open":
                if now - entry.opened_at < reset_timeout:
                    return "open", entry.opened_at + reset_timeout - now, False, False
                entry.state = "half_open"
                entry.probe_at = -1.0
            # half_open: one probe at a time; a probe that never reports expires after reset_timeout
            if entry.probe_at >= 0 and now - entry.probe_at < reset_timeout:
                return "half_open", entry.probe_at + reset_timeout - now, False, False
            entry.probe_at = now
            return "half_open", 0.0, True, True

    async def failure(self, tool: str, now: float, threshold: int) -> str:
        with self._lock:
            entry = self._entries.setdefault(tool, _Entry())
            if entry.state == "half_open":
                entry.state, entry.opened_at, entry.probe_at = "open", now, -1.0
            elif entry.state == "closed":
                entry.failures += 1
                if entry.failures >= threshold:
                    entry.state, entry.opened_at = "open", now
            return entry.state

    async def success(self, tool: str) -> str:
        with self._lock:
            self._entries[tool] = _Entry()
            return "closed"

    async def state(self, tool: str, now: float, reset_timeout: float) -> str:
        with self._lock:
            entry = self._entries.get(tool, _Entry())
            if entry.state == "open" and now - entry.opened_at >= reset_timeout:
                return "half_open"
            return entry.state


_ALLOW = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local reset = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'closed' then return {'closed', '0', 0, 1} end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', key, 'opened_at'))
  if now - opened < reset then return {'open', tostring(opened + reset - now), 0, 0} end
  redis.call('HSET', key, 'state', 'half_open', 'probe_at', '-1')
end
local probe = tonumber(redis.call('HGET', key, 'probe_at') or '-1')
if probe >= 0 and now - probe < reset then return {'half_open', tostring(probe + reset - now), 0, 0} end
redis.call('HSET', key, 'probe_at', tostring(now))
redis.call('EXPIRE', key, ttl)
return {'half_open', '0', 1, 1}
"""

_FAILURE = """
local key = KEYS[1]
local now = ARGV[1]
local threshold = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'half_open' then
  redis.call('HSET', key, 'state', 'open', 'opened_at', now, 'probe_at', '-1')
  state = 'open'
elseif state == 'closed' then
  local failures = redis.call('HINCRBY', key, 'failures', 1)
  if failures >= threshold then
    redis.call('HSET', key, 'state', 'open', 'opened_at', now)
    state = 'open'
  end
end
redis.call('EXPIRE', key, ttl)
return state
"""

_SUCCESS = """
redis.call('DEL', KEYS[1])
return 'closed'
"""


class RedisBreakerStore:
    """Breaker state shared by every replica through Redis (redis-py asyncio client)."""

    def __init__(self, redis: Any, *, prefix: str = "relaygate:breaker:", ttl_s: int = 86_400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._allow = redis.register_script(_ALLOW)
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)

    def _key(self, tool: str) -> str:
        return f"{self.prefix}{tool}"

    async def allow(self, tool: str, now: float, reset_timeout: float) -> tuple[str, float, bool, bool]:
        state, retry, probe, allowed = await self._allow(
            keys=[self._key(tool)], args=[repr(now), repr(reset_timeout), self.ttl_s]
        )
        return _text(state), float(_text(retry)), bool(int(probe)), bool(int(allowed))

    async def failure(self, tool: str, now: float, threshold: int) -> str:
        return _text(await self._failure(keys=[self._key(tool)], args=[repr(now), threshold, self.ttl_s]))

    async def success(self, tool: str) -> str:
        return _text(await self._success(keys=[self._key(tool)], args=[]))

    async def state(self, tool: str, now: float, reset_timeout: float) -> str:
        fields = await self.redis.hmget(self._key(tool), "state", "opened_at")
        state = _text(fields[0]) if fields[0] is not None else "closed"
        if state == "open" and now - float(_text(fields[1])) >= reset_timeout:
            return "half_open"
        return state


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ToolCircuitBreaker:
    """One breaker per tool name.

    Call `allow(tool)` before running a tool and `record_success` / `record_failure` after it.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_timeout_s: float = 60.0,
        store: BreakerStore | None = None,
        clock: Clock = time.time,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.reset_timeout_s = reset_timeout_s
        self.store: BreakerStore = store or MemoryBreakerStore()
        self._clock = clock

    async def allow(self, tool: str) -> BreakerDecision:
        """May `tool` run now? In half-open state only one caller (the probe) is allowed."""
        state, retry_after, probe, allowed = await self.store.allow(tool, self._clock(), self.reset_timeout_s)
        if allowed:
            return BreakerDecision(True, _state(state), probe=probe)
        return BreakerDecision(
            False,
            _state(state),
            retry_after=retry_after,
            message=(
                f"The tool `{tool}` is temporarily disabled after {self.threshold} consecutive failures "
                f"(retry in {retry_after:.0f} s). Do not call it now: continue without it, use another "
                "tool, or tell the user it is unavailable."
            ),
        )

    async def record_success(self, tool: str) -> BreakerState:
        """The call worked: close the breaker and forget past failures."""
        return _state(await self.store.success(tool))

    async def record_failure(self, tool: str) -> BreakerState:
        """The call failed: count it (or re-open after a failed probe)."""
        return _state(await self.store.failure(tool, self._clock(), self.threshold))

    async def state(self, tool: str) -> BreakerState:
        """The current state (`half_open` once the reset timeout has passed)."""
        return _state(await self.store.state(tool, self._clock(), self.reset_timeout_s))


def _state(value: str) -> BreakerState:
    if value not in ("closed", "open", "half_open"):
        raise ValueError(f"unknown breaker state {value!r}")
    return value  # type: ignore[return-value]
