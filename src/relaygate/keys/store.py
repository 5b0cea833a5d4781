"""Durable records (orgs, teams, keys and their hashes, provider credentials) over the
one SQL interface (`relaygate.state.db`), SQLite or PostgreSQL alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from relaygate.errors import GatewayError
from relaygate.keys.records import LIMIT_FIELDS, CredentialIn, GroupPatch, KeyIn, KeyPatch, OrgIn, TeamIn
from relaygate.keys.tokens import SecretBox, display_prefix, new_id, new_token, require_box, token_hash
from relaygate.state.db import Database, Row

_LIMIT_COLUMNS = ("rpm BIGINT, tpm BIGINT, tokens_per_hour BIGINT, budget_usd TEXT, budget_period TEXT")

MIGRATIONS = [
    f"""
    CREATE TABLE rg_orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, models TEXT, metadata TEXT NOT NULL,
        {_LIMIT_COLUMNS}, created_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE rg_teams (id TEXT PRIMARY KEY, name TEXT NOT NULL, org_id TEXT, models TEXT,
        metadata TEXT NOT NULL, {_LIMIT_COLUMNS}, created_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE rg_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, prefix TEXT NOT NULL, team_id TEXT,
        org_id TEXT, user_id TEXT, models TEXT, route TEXT, route_config TEXT,
        allow_request_config BIGINT NOT NULL, metadata TEXT NOT NULL, expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION, {_LIMIT_COLUMNS}, created_at DOUBLE PRECISION NOT NULL,
        rotated_at DOUBLE PRECISION);
    CREATE TABLE rg_key_hashes (hash TEXT PRIMARY KEY, key_id TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, valid_until DOUBLE PRECISION);
    CREATE INDEX rg_key_hashes_key ON rg_key_hashes (key_id);
    CREATE TABLE rg_credentials (name TEXT PRIMARY KEY, provider TEXT, org_id TEXT, ciphertext TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)
    """,
]


def _json(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


def _unjson(v: Any) -> Any:
    return None if v is None else orjson.loads(v)


def _limit_values(data: Any) -> list[Any]:
    out: list[Any] = []
    for f in LIMIT_FIELDS:
        v = getattr(data, f)
        out.append(str(v) if isinstance(v, Decimal) else v)
    return out


def _public_limits(row: Row) -> dict[str, Any]:
    return {f: row.get(f) for f in LIMIT_FIELDS}


def not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError(404, f"no {kind} {ident!r}", "not_found_error", f"{kind}_not_found")


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """A key row found by a token hash, and until when that hash is valid (rotation grace)."""

    key: Row
    valid_until: float | None


class KeyStore:
    def __init__(self, db: Database, box: SecretBox | None) -> None:
        self.db = db
        self.box = box

    async def migrate(self) -> None:
        await self.db.migrate("keys", MIGRATIONS)

    # --- orgs and teams --------------------------------------------------------------

    async def create_group(self, table: str, data: OrgIn) -> Row:
        ident = data.id or data.name
        org_id = data.org if isinstance(data, TeamIn) else None
        if org_id is not None:
            await self.get_group("org", org_id)
        kind = "team" if table == "teams" else "org"
        cols = "id, name, models, metadata, rpm, tpm, tokens_per_hour, budget_usd, budget_period, created_at"
        values: list[Any] = [ident, data.name, _json(data.models), _json(data.metadata), *_limit_values(data),
                             time.time()]
        if table == "teams":
            cols += ", org_id"
            values.append(org_id)
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        # insert-or-nothing: of two concurrent creates of one id exactly one wins
        sql = f"INSERT INTO rg_{table} ({cols}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING"  # noqa: S608
        if not await self.db.execute(sql, *values):
            raise GatewayError(409, f"{kind} {ident!r} exists", "invalid_request_error", f"{kind}_exists")
        return await self.get_group(kind, ident)

    async def get_group(self, kind: str, ident: str) -> Row:
        row = await self.db.fetchrow(f"SELECT * FROM rg_{kind}s WHERE id = $1", ident)  # noqa: S608
        if row is None:
            raise not_found(kind, ident)
        return row

    async def list_groups(self, kind: str) -> list[Row]:
        return await self.db.fetch(f"SELECT * FROM rg_{kind}s ORDER BY created_at, id")  # noqa: S608

    async def update_group(self, kind: str, ident: str, patch: GroupPatch) -> Row:
        await self.get_group(kind, ident)
        changes = patch.model_dump(exclude_unset=True)
        await self._update(f"rg_{kind}s", ident, changes)
        return await self.get_group(kind, ident)

    async def delete_group(self, kind: str, ident: str) -> None:
        if kind == "org" and await self.db.fetchrow("SELECT id FROM rg_teams WHERE org_id = $1", ident):
            raise GatewayError(409, f"org {ident!r} still has teams", "invalid_request_error", "org_not_empty")
        live = "revoked_at IS NULL"
        column = "team_id" if kind == "team" else "org_id"
        if await self.db.fetchrow(f"SELECT id FROM rg_keys WHERE {column} = $1 AND {live}", ident):  # noqa: S608
            raise GatewayError(409, f"{kind} {ident!r} still has live keys", "invalid_request_error",
                               f"{kind}_not_empty")
        if not await self.db.execute(f"DELETE FROM rg_{kind}s WHERE id = $1", ident):  # noqa: S608
            raise not_found(kind, ident)

    async def _update(self, table: str, ident: str, changes: dict[str, Any]) -> None:
        if not changes:
            return
        sets, values = [], []
        for col, v in changes.items():
            if col in ("models", "metadata", "route_config"):
                v = _json(v)
            elif isinstance(v, Decimal):
                v = str(v)
            elif isinstance(v, bool):
                v = int(v)
            values.append(v)
            sets.append(f"{col} = ${len(values)}")
        values.append(ident)
        await self.db.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE id = ${len(values)}", *values)  # noqa: S608

    # --- keys ------------------------------------------------------------------------

    async def create_key(self, data: KeyIn) -> tuple[Row, str]:
        """The new key's record and its token: the only time the token exists in clear."""
        team_id, org_id = data.team, data.org
        if team_id is not None:
            team = await self.get_group("team", team_id)
            if org_id is not None and team["org_id"] not in (None, org_id):
                raise GatewayError(400, f"team {team_id!r} belongs to org {team['org_id']!r}, not {org_id!r}",
                                   "invalid_request_error", "wrong_org")
            org_id = team["org_id"] or org_id
        if org_id is not None:
            await self.get_group("org", org_id)
        token = new_token()
        now = time.time()
        expires = data.expires_at if data.expires_at is not None else (
            now + data.expires_in_s if data.expires_in_s else None)
        key_id = new_id("key")
        values = [key_id, data.name, display_prefix(token), team_id, org_id, data.user, _json(data.models),
                  data.route, _json(data.config), int(data.allow_request_config), _json(data.metadata), expires,
                  *_limit_values(data), now]
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO rg_keys (id, name, prefix, team_id, org_id, user_id, models, route, route_config, "
                "allow_request_config, metadata, expires_at, rpm, tpm, tokens_per_hour, budget_usd, budget_period, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                *values)
            await tx.execute("INSERT INTO rg_key_hashes (hash, key_id, created_at, valid_until) VALUES ($1, $2, $3, NULL)",
                             token_hash(token), key_id, now)
        return await self.get_key(key_id), token

    async def get_key(self, key_id: str) -> Row:
        row = await self.db.fetchrow("SELECT * FROM rg_keys WHERE id = $1", key_id)
        if row is None:
            raise not_found("key", key_id)
        return row

    async def list_keys(self, team: str | None = None, org: str | None = None) -> list[Row]:
        if team is not None:
            return await self.db.fetch("SELECT * FROM rg_keys WHERE team_id = $1 ORDER BY created_at, id", team)
        if org is not None:
            return await self.db.fetch("SELECT * FROM rg_keys WHERE org_id = $1 ORDER BY created_at, id", org)
        return await self.db.fetch("SELECT * FROM rg_keys ORDER BY created_at, id")

    async def update_key(self, key_id: str, patch: KeyPatch) -> Row:
        await self.get_key(key_id)
        changes = patch.model_dump(exclude_unset=True)
        if "user" in changes:
            changes["user_id"] = changes.pop("user")
        if "config" in changes:
            changes["route_config"] = changes.pop("config")
        await self._update("rg_keys", key_id, changes)
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str) -> Row:
        await self.get_key(key_id)
        now = time.time()
        # the hashes stay, so a revoked key is refused as revoked rather than unknown
        await self.db.execute("UPDATE rg_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", now, key_id)
        return await self.get_key(key_id)

    async def rotate_key(self, key_id: str, grace_s: float) -> tuple[Row, str]:
        """A new token for the same key (same limits and spend); the old one keeps working
        for `grace_s` seconds so clients can roll over."""
        key = await self.get_key(key_id)
        if key["revoked_at"] is not None:
            raise GatewayError(409, f"key {key_id!r} is revoked", "invalid_request_error", "key_revoked")
        token = new_token()
        now = time.time()
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM rg_key_hashes WHERE key_id = $1 AND valid_until IS NOT NULL "
                             "AND valid_until < $2", key_id, now)
            await tx.execute("UPDATE rg_key_hashes SET valid_until = $1 WHERE key_id = $2 AND "
                             "(valid_until IS NULL OR valid_until > $1)", now + grace_s, key_id)
            await tx.execute("INSERT INTO rg_key_hashes (hash, key_id, created_at, valid_until) VALUES ($1, $2, $3, NULL)",
                             token_hash(token), key_id, now)
            await tx.execute("UPDATE rg_keys SET prefix = $1, rotated_at = $2 WHERE id = $3",
                             display_prefix(token), now, key_id)
        return await self.get_key(key_id), token

    async def find_by_hash(self, digest: str) -> KeyMatch | None:
        row = await self.db.fetchrow(
            "SELECT h.valid_until AS hash_valid_until, k.* FROM rg_key_hashes h JOIN rg_keys k ON k.id = h.key_id "
            "WHERE h.hash = $1", digest)
        if row is None:
            return None
        valid_until = row.pop("hash_valid_until")
        return KeyMatch(row, valid_until)

    # --- provider credentials (write-only) --------------------------------------------

    async def put_credential(self, data: CredentialIn) -> Row:
        box = require_box(self.box)
        if data.org is not None:
            await self.get_group("org", data.org)
        now = time.time()
        inserted = await self.db.execute(
            "INSERT INTO rg_credentials (name, provider, org_id, ciphertext, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING",
            data.name, data.provider, data.org, box.encrypt(data.secret), now)
        if not inserted:
            raise GatewayError(409, f"credential {data.name!r} exists (PATCH or rotate it)", "invalid_request_error",
                               "credential_exists")
        return await self.get_credential(data.name)

    async def set_credential_secret(self, name: str, secret: str | None, provider: str | None) -> Row:
        await self.get_credential(name)
        if secret is not None:
            box = require_box(self.box)
            await self.db.execute("UPDATE rg_credentials SET ciphertext = $1, updated_at = $2 WHERE name = $3",
                                  box.encrypt(secret), time.time(), name)
        if provider is not None:
            await self.db.execute("UPDATE rg_credentials SET provider = $1 WHERE name = $2", provider, name)
        return await self.get_credential(name)

    async def get_credential(self, name: str) -> Row:
        row = await self.db.fetchrow("SELECT name, provider, org_id, created_at, updated_at FROM rg_credentials "
                                     "WHERE name = $1", name)
        if row is None:
            raise not_found("credential", name)
        return row

    async def list_credentials(self) -> list[Row]:
        return await self.db.fetch("SELECT name, provider, org_id, created_at, updated_at FROM rg_credentials "
                                   "ORDER BY name")

    async def delete_credential(self, name: str) -> None:
        if not await self.db.execute("DELETE FROM rg_credentials WHERE name = $1", name):
            raise not_found("credential", name)

    async def credential_secret(self, name: str) -> str | None:
        row = await self.db.fetchrow("SELECT ciphertext FROM rg_credentials WHERE name = $1", name)
        if row is None or self.box is None:
            return None
        return self.box.decrypt(str(row["ciphertext"]))


def key_view(row: Row) -> dict[str, Any]:
    """A key as the admin API shows it: never its token or hash."""
    return {
        "id": row["id"], "name": row["name"], "key_prefix": row["prefix"], "team": row["team_id"],
        "org": row["org_id"], "user": row["user_id"], "models": _unjson(row["models"]), "route": row["route"],
        "config": _unjson(row["route_config"]), "allow_request_config": bool(row["allow_request_config"]),
        "metadata": _unjson(row["metadata"]) or {}, "expires_at": row["expires_at"], "revoked_at": row["revoked_at"],
        "created_at": row["created_at"], "rotated_at": row["rotated_at"], **_public_limits(row),
    }


def group_view(row: Row) -> dict[str, Any]:
    out = {"id": row["id"], "name": row["name"], "models": _unjson(row["models"]),
           "metadata": _unjson(row["metadata"]) or {}, "created_at": row["created_at"], **_public_limits(row)}
    if "org_id" in row:
        out["org"] = row["org_id"]
    return out


def credential_view(row: Row) -> dict[str, Any]:
    return {"name": row["name"], "provider": row["provider"], "org": row["org_id"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}
