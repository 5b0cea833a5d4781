"""Fault decisions: which requests fail, hang, slow down or have their stream cut.

Two sources, checked in this order:
- the model name, so a route target can always behave one way:
  `fail-<code>`, `hang`, `slow-<ms>`, `cut-<k>`, `stall-<k>`, `error-<k>`, `reply-<text>`;
- the seeded random rates from the command line (`--fail-rate`, `--hang-rate`,
  `--cut-stream-rate`), drawn from one RNG so a run with the same seed and the same
  request order injects the same faults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

# The cut point of a randomly cut stream is drawn from 1..this many chunks.
_RANDOM_CUT_MAX_CHUNKS = 4


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fault settings of one mock-upstream server (the CLI flags)."""

    latency_ms: int = 0
    fail_rate: float = 0.0
    fail_codes: tuple[int, ...] = (429, 503)
    stream_chunk_ms: int = 0
    cut_stream_rate: float = 0.0
    hang_rate: float = 0.0
    seed: int | None = None
    retry_after_s: int = 1
    # Not a fault: prefixes shorter than this are never prompt-cached (Anthropic's real
    # minimum is 1024-4096 tokens by model; 0 caches every breakpoint).
    cache_min_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_rate", "cut_stream_rate", "hang_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.fail_rate > 0 and not self.fail_codes:
            raise ValueError("fail_rate > 0 needs at least one status in fail_codes")
        for code in self.fail_codes:
            if not 400 <= code <= 599:
                raise ValueError(f"fail code {code} is not an HTTP error status")
        if self.latency_ms < 0 or self.stream_chunk_ms < 0:
            raise ValueError("latency_ms and stream_chunk_ms must be >= 0")


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one request."""

    fail_status: int | None = None
    hang: bool = False
    delay_ms: int = 0  # before the first byte
    cut_after: int | None = None  # stream: chunks sent before the connection drops
    reply_text: str | None = None  # answer text forced by a `reply-<text>` model
    stall_after: int | None = None  # stream: chunks sent before it goes silent (connection open)
    error_after: int | None = None  # stream: chunks sent before an in-stream error event

    @property
    def is_clean(self) -> bool:
        return (
            self.fail_status is None
            and not self.hang
            and self.cut_after is None
            and self.stall_after is None
            and self.error_after is None
        )


NO_FAULT = Fault()


@dataclass(slots=True)
class FaultInjector:
    """Decides the fault of each request from its model name and the seeded rates."""

    config: FaultConfig
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)

    def decide(self, model: str, stream: bool) -> Fault:
        by_name = fault_for_model(model)
        cfg = self.config
        delay = cfg.latency_ms + by_name.delay_ms
        if by_name.error_after is not None and not stream:
            return Fault(fail_status=500, delay_ms=delay)  # no stream to carry the error event
        if not by_name.is_clean:
            return replace(by_name, delay_ms=delay)
        if cfg.fail_rate == 0.0 and cfg.hang_rate == 0.0 and cfg.cut_stream_rate == 0.0:
            if delay == 0 and by_name.reply_text is None:
                return NO_FAULT
            return Fault(delay_ms=delay, reply_text=by_name.reply_text)
        # One draw per kind and request, always in the same order, keeps runs reproducible.
        rng = self._rng
        fail_draw, hang_draw, cut_draw = rng.random(), rng.random(), rng.random()
        if fail_draw < cfg.fail_rate:
            return Fault(fail_status=rng.choice(cfg.fail_codes), delay_ms=delay)
        if hang_draw < cfg.hang_rate:
            return Fault(hang=True, delay_ms=delay)
        if stream and cut_draw < cfg.cut_stream_rate:
            cut = rng.randint(1, _RANDOM_CUT_MAX_CHUNKS)
            return Fault(delay_ms=delay, cut_after=cut, reply_text=by_name.reply_text)
        return Fault(delay_ms=delay, reply_text=by_name.reply_text)


def fault_for_model(model: str) -> Fault:
    """The fault a model name asks for: `fail-503`, `hang`, `slow-250`, `cut-2`, `stall-2`,
    `error-2`, `reply-hi`."""
    if model == "hang":
        return Fault(hang=True)
    prefix, sep, arg = model.partition("-")
    if not sep:
        return NO_FAULT
    if prefix == "reply":
        return Fault(reply_text=arg)
    if not arg.isdigit():
        return NO_FAULT
    number = int(arg)
    if prefix == "fail" and 400 <= number <= 599:
        return Fault(fail_status=number)
    if prefix == "slow":
        return Fault(delay_ms=number)
    if prefix == "cut":
        return Fault(cut_after=number)
    if prefix == "stall":
        return Fault(stall_after=number)
    if prefix == "error":
        return Fault(error_after=number)
    return NO_FAULT
