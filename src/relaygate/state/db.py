"""One async SQL interface over SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQL is written once, in PostgreSQL's placeholder style (`$1, $2`); for SQLite the
placeholders become `?1, ?2`. Types are chosen to mean the same in both (TEXT, BIGINT,
DOUBLE PRECISION, JSON as TEXT). Schema changes are numbered migrations per component,
applied on start inside a transaction (under an advisory lock on PostgreSQL, so replicas
starting together migrate once).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite

if TYPE_CHECKING:
    import asyncpg  # imported only for a postgresql:// database_url

_PLACEHOLDER = re.compile(r"\$(\d+)")
Row = dict[str, Any]


class Executor(Protocol):
    async def execute(self, sql: str, *args: Any) -> int: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """`rows` may be lazy: SQLite consumes it in its worker thread, so the rows are built
        there, one before each statement, instead of all at once in the event loop."""


class Database(Executor, Protocol):
    dialect: str

    def transaction(self) -> Any: ...

    async def migrate(self, component: str, migrations: Sequence[str]) -> int: ...

    async def close(self) -> None: ...


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


async def _apply_migrations(tx: Executor, component: str, migrations: Sequence[str]) -> int:
    """Runs, inside the caller's transaction, the migrations of `component` not yet
    recorded in `relaygate_migrations` (version = position in the list, from 1)."""
    rows = await tx.fetch("SELECT version FROM relaygate_migrations WHERE component = $1", component)
    applied = {int(r["version"]) for r in rows}
    count = 0
    for version, script in enumerate(migrations, start=1):
        if version in applied:
            continue
        for statement in _split(script):
            await tx.execute(statement)
        await tx.execute("INSERT INTO relaygate_migrations (component, version) VALUES ($1, $2)", component, version)
        count += 1
    return count


class SqliteDatabase:
    """aiosqlite on one connection (WAL); writes and transactions are serialised by a lock,
    which is what SQLite does anyway, and makes compare-and-set sequences atomic."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        return cls(conn)

    @staticmethod
    def _sql(sql: str) -> str:
        return _PLACEHOLDER.sub(r"?\1", sql)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            cur = await self._conn.execute(self._sql(sql), args)
            return cur.rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cur = await self._conn.execute(self._sql(sql), args)
        return [dict(r) for r in await cur.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        cur = await self._conn.execute(self._sql(sql), args)
        row = await cur.fetchone()
        return dict(row) if row is not None else None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._lock:
            try:
                await self._conn.execute("BEGIN")
                await self._conn.executemany(self._sql(sql), rows)
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    async def _rollback(self) -> None:
        """After a failure or a cancellation anywhere in a transaction. aiosqlite runs a
        statement in its thread even when the awaiting task is cancelled, so a cancelled
        `BEGIN` still began one: rolling back is always needed, and finding nothing to roll
        back (the failure came before `BEGIN` ran, or after `COMMIT`) is fine."""
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute("ROLLBACK")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield _SqliteTx(self._conn)
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    async def migrate(self, component: str, migrations: Sequence[str]) -> int:
        await self.execute("CREATE TABLE IF NOT EXISTS relaygate_migrations "
                           "(component TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (component, version))")
        async with self.transaction() as tx:
            return await _apply_migrations(tx, component, migrations)

    async def close(self) -> None:
        await self._conn.close()


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        cur = await self._conn.execute(SqliteDatabase._sql(sql), args)
        return cur.rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cur = await self._conn.execute(SqliteDatabase._sql(sql), args)
        return [dict(r) for r in await cur.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        cur = await self._conn.execute(SqliteDatabase._sql(sql), args)
        row = await cur.fetchone()
        return dict(row) if row is not None else None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(SqliteDatabase._sql(sql), rows)


def _pg_count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> int:
        return _pg_count(await self._pool.execute(sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._pool.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._pool.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def migrate(self, component: str, migrations: Sequence[str]) -> int:
        async with self.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext('relaygate_migrations'))")
            await tx.execute("CREATE TABLE IF NOT EXISTS relaygate_migrations "
                             "(component TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (component, version))")
            return await _apply_migrations(tx, component, migrations)

    async def close(self) -> None:
        await self._pool.close()


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _pg_count(await self._conn.execute(sql, *args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._conn.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)


async def connect(url: str) -> Database:
    """`sqlite:///relative/path.db`, `sqlite:////abs/path.db`, `sqlite:///:memory:`, or
    `postgresql://user@host:port/db`."""
    if url.startswith("sqlite:///"):
        return await SqliteDatabase.open(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.open(url)
    raise ValueError(f"unsupported database_url {url!r} (use sqlite:///path or postgresql://...)")
