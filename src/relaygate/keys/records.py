"""What the admin API accepts for orgs, teams, keys and credentials (validated input)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relaygate.limits.config import BudgetPeriod, LevelLimits

LIMIT_FIELDS = ("rpm", "tpm", "tokens_per_hour", "budget_usd", "budget_period")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Limits(_Input):
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    tokens_per_hour: int | None = Field(default=None, ge=0)
    budget_usd: Decimal | None = Field(default=None, ge=0)
    budget_period: BudgetPeriod | None = None


class OrgIn(_Limits):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class TeamIn(OrgIn):
    org: str | None = None


class GroupPatch(_Limits):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[str] | None = None
    metadata: dict[str, Any] | None = None


class KeyIn(_Limits):
    name: str = Field(min_length=1, max_length=200)
    team: str | None = None
    org: str | None = None
    user: str | None = None
    models: list[str] | None = None
    route: str | None = None  # a configured route this key always uses
    config: dict[str, Any] | None = None  # or its own route config (per-user routing)
    allow_request_config: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    expires_at: float | None = None  # unix seconds
    expires_in_s: float | None = Field(default=None, gt=0)


class KeyPatch(_Limits):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    user: str | None = None
    models: list[str] | None = None
    route: str | None = None
    config: dict[str, Any] | None = None
    allow_request_config: bool | None = None
    metadata: dict[str, Any] | None = None
    expires_at: float | None = None


class RotateIn(_Input):
    grace_s: float | None = Field(default=None, ge=0)


class CredentialIn(_Input):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    secret: str = Field(min_length=1)
    provider: str | None = None
    org: str | None = None


class CredentialPatch(_Input):
    secret: str | None = Field(default=None, min_length=1)
    provider: str | None = None


def limits_of(row: dict[str, Any]) -> LevelLimits:
    """A stored row's own limits (unset ones stay unset, to be filled by defaults)."""
    values: dict[str, Any] = {}
    for f in LIMIT_FIELDS:
        v = row.get(f)
        if v is not None:
            values[f] = Decimal(v) if f == "budget_usd" else v
    return LevelLimits(**values)
