"""A database URL per backend: a SQLite file, or a PostgreSQL schema of the test's own
(so tests sharing the server never see each other's tables)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest


async def database_url(kind: str, tmp_path: Path, postgres_url: str | None) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/relaygate.db"
        return
    assert postgres_url is not None
    schema = "t_" + secrets.token_hex(6)
    try:
        conn = await asyncpg.connect(postgres_url)
    except Exception as exc:  # a missing server is a failure, never a skip
        pytest.fail(f"PostgreSQL is required at {postgres_url}: {exc}")
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_url}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
