"""Refuse a tool call the model already made, with the same arguments, a moment ago."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relaygate.agent.canonical import canonicalize_tool_result

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class DuplicateDecision:
    """Whether a call may run; `message` is written for the model when it may not."""

    allowed: bool
    message: str = ""
    seconds_since_first: float = 0.0


class DuplicateToolCallGuard:
    """Same tool + same canonical arguments within `window_s` -> refused.

    One guard per agent loop (conversation). `check` records the call when it allows it, in
    one step, so concurrent identical calls let exactly one through.
    """

    def __init__(self, window_s: float = 120.0, *, clock: Clock = time.monotonic, max_entries: int = 10_000) -> None:
        self.window_s = window_s
        self._clock = clock
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(tool: str, arguments: Mapping[str, Any] | str) -> tuple[str, str]:
        """The identity of a call: tool name and canonical JSON of its arguments (key order and
        volatile fields such as timestamps do not make calls different)."""
        return tool, canonicalize_tool_result(arguments)

    def check(self, tool: str, arguments: Mapping[str, Any] | str) -> DuplicateDecision:
        """Allow and remember the call, or refuse it as a repeat."""
        key = self.key(tool, arguments)
        with self._lock:
            now = self._clock()
            while self._seen:
                oldest_key, oldest_at = next(iter(self._seen.items()))
                if now - oldest_at < self.window_s and len(self._seen) < self._max:
                    break
                del self._seen[oldest_key]
            first = self._seen.get(key)
            if first is not None and now - first < self.window_s:
                ago = now - first
                return DuplicateDecision(
                    False,
                    f"Refused: you already called `{tool}` with exactly these arguments {ago:.0f} s ago. "
                    "Its result is earlier in this conversation; use it instead of repeating the call. "
                    "If you need something different, change the arguments; if the earlier call failed, "
                    "fix the cause before retrying.",
                    ago,
                )
            self._seen[key] = now
            self._seen.move_to_end(key)
            return DuplicateDecision(True)

    def forget(self, tool: str, arguments: Mapping[str, Any] | str) -> None:
        """Let an identical call through again (e.g. after a transient failure)."""
        with self._lock:
            self._seen.pop(self.key(tool, arguments), None)
