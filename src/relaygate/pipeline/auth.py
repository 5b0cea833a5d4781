"""Stage 1: who is calling. Keys come from resolvers (master key, config keys, the
virtual-key store), tried in order; a key is compared by its hash, never stored plain."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping

from relaygate.config.models import GatewayConfig
from relaygate.errors import GatewayError
from relaygate.pipeline.context import Principal, RequestContext

KeyResolver = Callable[[str], Awaitable[Principal | None]]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


class ConfigKeys:
    """The master key and the keys written in the config file."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.master_hash = hash_key(cfg.server.master_key.get_secret_value()) if cfg.server.master_key else None
        self.static: dict[str, Principal] = {}
        for k in cfg.keys:
            self.static[hash_key(k.key.get_secret_value())] = Principal(
                key_id=f"config:{k.name}", key_name=k.name, team=k.team, user=k.user,
                models=frozenset(k.models) if k.models is not None else None,
            )

    async def __call__(self, token: str) -> Principal | None:
        digest = hash_key(token)
        if self.master_hash and hmac.compare_digest(digest, self.master_hash):
            return Principal(key_id="master", key_name="master", is_master=True)
        return self.static.get(digest)


class AuthStage:
    name = "auth"

    def __init__(self, resolvers: list[KeyResolver]) -> None:
        self.resolvers = resolvers

    async def on_request(self, ctx: RequestContext) -> None:
        token = bearer_token(ctx.headers)
        if not token:
            raise GatewayError(401, "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'",
                               "authentication_error", "missing_api_key")
        for resolve in self.resolvers:
            principal = await resolve(token)
            if principal is not None:
                ctx.principal = principal
                return
        raise GatewayError(401, "invalid API key", "authentication_error", "invalid_api_key")

    async def on_complete(self, ctx: RequestContext) -> None:
        return None
