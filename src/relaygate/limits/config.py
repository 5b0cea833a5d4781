"""The `limits:` and `alerts:` sections of the config, and the limits a principal carries."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BudgetPeriod = Literal["day", "week", "month"]
FailMode = Literal["open", "closed"]
LEVELS = ("key", "team", "org", "user")
KINDS = ("rpm", "tpm", "tokens_per_hour", "budget")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LevelLimits(_Strict):
    """Limits of one key, team, org or user; `None` means unlimited."""

    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    tokens_per_hour: int | None = Field(default=None, ge=0)
    budget_usd: Decimal | None = Field(default=None, ge=0)
    budget_period: BudgetPeriod = "month"

    def merged_over(self, default: LevelLimits) -> LevelLimits:
        """This level's own values, each unset one taken from `default`."""
        own = self.model_dump(exclude_unset=True, exclude_none=True)
        return default.model_copy(update=own)


class LevelDefaults(_Strict):
    key: LevelLimits = Field(default_factory=lambda: LevelLimits())
    team: LevelLimits = Field(default_factory=lambda: LevelLimits())
    org: LevelLimits = Field(default_factory=lambda: LevelLimits())
    user: LevelLimits = Field(default_factory=lambda: LevelLimits())

    def of(self, level: str) -> LevelLimits:
        limits: LevelLimits = getattr(self, level)
        return limits


class LimitsConfig(_Strict):
    """`limits:` in the config file (docs/keys.md)."""

    # auto: Redis when `state.redis_url` is set, else in-process counters
    backend: Literal["auto", "memory", "redis"] = "auto"
    defaults: LevelDefaults = Field(default_factory=LevelDefaults)
    # tokens reserved for the answer when a request sends no max_tokens
    default_max_tokens: int = Field(default=4096, ge=1)
    # selectors of limits evaluated but not enforced: "tpm", "budget", "team.rpm", "*"
    shadow: list[str] = Field(default_factory=list)
    rate_limit_fail_mode: FailMode = "open"
    budget_fail_mode: FailMode = "closed"
    # a reservation never reconciled (crash, cancelled task) is refunded after this
    reservation_ttl_s: float = Field(default=900, gt=0)
    # how long a resolved virtual key is trusted before the database is asked again
    key_cache_ttl_s: float = Field(default=5, ge=0)
    rotation_grace_s: float = Field(default=86400, ge=0)
    idempotency_ttl_s: float = Field(default=86400, gt=0)
    # calibration of the pre-call input estimate (no offline tokenizer ships its vocab)
    chars_per_token: float = Field(default=4.0, gt=0)

    def is_shadow(self, level: str, kind: str) -> bool:
        s = self.shadow
        if not s:
            return False
        return "*" in s or kind in s or f"{level}.{kind}" in s or f"{level}.*" in s


@dataclass(frozen=True, slots=True)
class LevelRef:
    """One level a request must fit: `level` (key|team|org|user), its id, its limits."""

    level: str
    id: str
    limits: LevelLimits


@dataclass(frozen=True, slots=True)
class PrincipalLimits:
    """What the key resolver hands the limits stage in `Principal.limits`."""

    levels: tuple[LevelRef, ...]
