"""Virtual key -> `Principal`, for the auth stage: the token's hash is looked up in the
database and the answer cached in memory for `limits.key_cache_ttl_s` (5 s by default).

Invalidation: a revoke, rotate or edit drops this process's entries at once and, when Redis
is configured, is published on `relaygate:keys:invalidate` so every replica drops them too;
without Redis the short TTL bounds how long another replica may still accept a revoked key.
Expiry and rotation grace are checked on every request, not cached."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from relaygate.config.models import GatewayConfig
from relaygate.errors import GatewayError
from relaygate.keys.records import limits_of
from relaygate.keys.store import KeyStore
from relaygate.keys.tokens import PREFIX, token_hash
from relaygate.limits.config import LevelLimits, LevelRef, PrincipalLimits
from relaygate.pipeline.context import Principal

log = logging.getLogger("relaygate.keys")
CHANNEL = "relaygate:keys:invalidate"
_MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Entry:
    principal: Principal
    key_id: str
    expires_at: float | None  # the key's own expiry
    valid_until: float | None  # this token's rotation grace
    revoked: bool
    cached_until: float


def _models(*lists: Any) -> frozenset[str] | None:
    """The routes every level allows (None = every route)."""
    out: frozenset[str] | None = None
    for raw in lists:
        if raw is None:
            continue
        names = frozenset(orjson.loads(raw))
        out = names if out is None else out & names
    return out


class VirtualKeys:
    """The resolver (`async (token) -> Principal | None`) for `rg-` keys."""

    def __init__(self, store: KeyStore, cfg: GatewayConfig,
                 publish: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.ttl = cfg.limits.key_cache_ttl_s
        self.publish = publish
        self._cache: dict[str, _Entry] = {}

    async def __call__(self, token: str) -> Principal | None:
        if not token.startswith(PREFIX):
            return None
        digest = token_hash(token)
        now = time.time()
        entry = self._cache.get(digest)
        if entry is None or entry.cached_until < now:
            entry = await self._load(digest, now)
            if entry is None:
                self._cache.pop(digest, None)
                return None
        if entry.revoked:
            raise GatewayError(401, "this API key was revoked", "authentication_error", "key_revoked")
        if entry.expires_at is not None and entry.expires_at <= now:
            raise GatewayError(401, "this API key has expired", "authentication_error", "key_expired")
        if entry.valid_until is not None and entry.valid_until <= now:
            raise GatewayError(401, "this API key was rotated and its grace period is over; use the new key",
                               "authentication_error", "key_rotated")
        return entry.principal

    async def _load(self, digest: str, now: float) -> _Entry | None:
        match = await self.store.find_by_hash(digest)
        if match is None:
            return None
        key = match.key
        team = await self.store.db.fetchrow("SELECT * FROM rg_teams WHERE id = $1", key["team_id"]) \
            if key["team_id"] else None
        org = await self.store.db.fetchrow("SELECT * FROM rg_orgs WHERE id = $1", key["org_id"]) \
            if key["org_id"] else None
        defaults = self.cfg.limits.defaults
        levels = [LevelRef("key", key["id"], limits_of(key).merged_over(defaults.key))]
        if key["team_id"]:
            own = limits_of(team) if team else LevelLimits()
            levels.append(LevelRef("team", key["team_id"], own.merged_over(defaults.team)))
        if key["org_id"]:
            own = limits_of(org) if org else LevelLimits()
            levels.append(LevelRef("org", key["org_id"], own.merged_over(defaults.org)))
        route_config = orjson.loads(key["route_config"]) if key["route_config"] else None
        if route_config is None and key["route"] and key["route"] in self.cfg.routes:
            route_config = self.cfg.routes[key["route"]].model_dump(mode="json", exclude_none=True)
        principal = Principal(
            key_id=key["id"], key_name=key["name"], team=key["team_id"], org=key["org_id"], user=key["user_id"],
            models=_models(key["models"], team["models"] if team else None, org["models"] if org else None),
            route_config=route_config, allow_request_config=bool(key["allow_request_config"]),
            metadata=orjson.loads(key["metadata"]) if key["metadata"] else {},
            limits=PrincipalLimits(tuple(levels)),
        )
        entry = _Entry(principal, key["id"], key["expires_at"], match.valid_until, key["revoked_at"] is not None,
                       now + self.ttl)
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()
        self._cache[digest] = entry
        return entry

    def forget_local(self, key_id: str | None = None) -> None:
        """Drops cached entries of one key (every key when None, e.g. a team changed)."""
        if key_id is None:
            self._cache.clear()
            return
        for digest in [d for d, e in self._cache.items() if e.key_id == key_id]:
            del self._cache[digest]

    async def invalidate(self, key_id: str | None = None) -> None:
        self.forget_local(key_id)
        if self.publish is not None:
            try:
                await self.publish("key:" + (key_id or "*"))
            except Exception as exc:  # the TTL still bounds staleness
                log.warning("could not publish key invalidation: %s", type(exc).__name__)


async def listen(redis: Any, on_message: Callable[[str], None]) -> None:
    """Follows the invalidation channel until cancelled, reconnecting after errors."""
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            async for msg in pubsub.listen():
                if msg.get("type") == "message":
                    data = msg["data"]
                    on_message(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("key invalidation channel dropped (%s); retrying", type(exc).__name__)
            await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
