"""Circuit breakers per target: closed -> open once `failure_threshold` failures within
`window_s` make up at least `failure_rate_threshold` of the window's calls -> after the
cooldown one probe (half-open) -> closed on success, open again on failure.

Every check-then-act is atomic: in memory it runs without an `await` in between (one
event loop), in Redis it is one Lua script (`state/redis_breakers.py`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from relaygate.config.models import CircuitBreakerConfig

BreakerState = Literal["closed", "open", "half_open"]
_MAX_OUTCOMES = 4096  # per target: bounds memory at any request rate


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    window_s: float = 30.0
    cooldown_s: float = 60.0
    # a probe that never reports back (cancelled request) frees its slot after this
    probe_timeout_s: float = 30.0
    failure_rate_threshold: float = 0.5

    @classmethod
    def from_config(cls, cb: CircuitBreakerConfig, probe_timeout_s: float) -> BreakerPolicy:
        return cls(cb.failure_threshold, cb.window_s, cb.cooldown_s, probe_timeout_s, cb.failure_rate_threshold)

    def trips(self, failures: int, calls: int) -> bool:
        return failures >= self.failure_threshold and failures >= self.failure_rate_threshold * calls


@dataclass(slots=True)
class BreakerSnapshot:
    target: str
    state: BreakerState
    recent_failures: int
    opened_at: float | None


class Breakers(Protocol):
    async def allow(self, target: str) -> bool: ...

    async def record_success(self, target: str) -> None: ...

    async def record_failure(self, target: str) -> None: ...

    async def snapshot(self) -> list[BreakerSnapshot]: ...


@dataclass(slots=True)
class _Circuit:
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, failed)
    failures: int = 0
    state: BreakerState = "closed"
    opened_at: float = 0.0
    probe_started: float = 0.0

    def record(self, now: float, failed: bool, window: float) -> None:
        self.outcomes.append((now, failed))
        self.failures += failed
        while self.outcomes and (now - self.outcomes[0][0] > window or len(self.outcomes) > _MAX_OUTCOMES):
            self.failures -= self.outcomes.popleft()[1]

    def reset(self) -> None:
        self.outcomes.clear()
        self.failures = 0


class MemoryBreakers:
    """In-process breakers (one event loop: no await between check and update)."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, target: str) -> _Circuit:
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = self._circuits[target] = _Circuit()
        return circuit

    async def allow(self, target: str) -> bool:
        circuit = self._circuits.get(target)
        if circuit is None or circuit.state == "closed":
            return True
        now = self.clock()
        if circuit.state == "open":
            if now - circuit.opened_at < self.policy.cooldown_s:
                return False
            circuit.state = "half_open"
            circuit.probe_started = now
            return True
        # half-open: one probe at a time
        if now - circuit.probe_started >= self.policy.probe_timeout_s:
            circuit.probe_started = now
            return True
        return False

    async def record_success(self, target: str) -> None:
        circuit = self._get(target)
        if circuit.state != "closed":
            circuit.state = "closed"
            circuit.reset()
        else:
            circuit.record(self.clock(), False, self.policy.window_s)

    async def record_failure(self, target: str) -> None:
        circuit = self._get(target)
        now = self.clock()
        if circuit.state == "half_open":
            circuit.state, circuit.opened_at = "open", now
            return
        if circuit.state == "open":
            return
        circuit.record(now, True, self.policy.window_s)
        if self.policy.trips(circuit.failures, len(circuit.outcomes)):
            circuit.state, circuit.opened_at = "open", now
            circuit.reset()

    async def snapshot(self) -> list[BreakerSnapshot]:
        now = self.clock()
        out = []
        for target, c in sorted(self._circuits.items()):
            recent = sum(1 for t, failed in c.outcomes if failed and now - t <= self.policy.window_s)
            out.append(BreakerSnapshot(target, c.state, recent, c.opened_at if c.state != "closed" else None))
        return out
