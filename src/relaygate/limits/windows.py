"""Fixed windows: which window a moment falls in, when it resets, how long its counter lives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_SPAN_S = {"rpm": 60, "tpm": 60, "tokens_per_hour": 3600}
# counters outlive their window a little, so a late reconciliation finds them
_SLACK_MS = 120_000


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # unix seconds
    end: int

    @property
    def tag(self) -> str:
        return str(self.start)

    def ttl_ms(self, now: float) -> int:
        return max(1, int((self.end - now) * 1000)) + _SLACK_MS

    def reset_s(self, now: float) -> float:
        return max(0.0, self.end - now)


def rate_window(kind: str, now: float) -> Window:
    span = _SPAN_S[kind]
    start = int(now // span) * span
    return Window(start, start + span)


_BUDGET_CACHE: dict[tuple[str, int], Window] = {}


def budget_window(period: str, now: float) -> Window:
    """Calendar periods in UTC: a day, an ISO week (from Monday), a month."""
    day_key = (period, int(now // 86400))
    hit = _BUDGET_CACHE.get(day_key)
    if hit is None:
        if len(_BUDGET_CACHE) > 64:
            _BUDGET_CACHE.clear()
        hit = _BUDGET_CACHE[day_key] = _calendar_window(period, now)
    return hit


def _calendar_window(period: str, now: float) -> Window:
    t = datetime.fromtimestamp(now, UTC)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return Window(int(start.timestamp()), int(end.timestamp()))


def openai_duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` style: `20ms`, `7s`, `1m30s`, `2h5m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    s = math.ceil(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"
