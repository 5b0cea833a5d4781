"""Thread sandbox status, moved only by compare-and-set so concurrent starts create one kernel.

Status goes `off -> starting -> running -> stopping -> off`. Every move is one
`UPDATE ... WHERE thread_id = ? AND status = ?`; the caller whose UPDATE changed a row won
the transition, everyone else lost it and waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiosqlite
import asyncpg

Status = Literal["off", "starting", "running", "stopping"]

_DDL = """
CREATE TABLE IF NOT EXISTS sandbox_threads (
    thread_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    owner TEXT NOT NULL,
    generation INTEGER NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class ThreadState:
    """One row of the state table."""

    thread_id: str
    status: Status
    owner: str
    generation: int
    """How many times a kernel was started for this thread."""
    updated_at: float


class ThreadStateStore(Protocol):
    """Where thread status lives (SQLite or PostgreSQL)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, thread_id: str) -> ThreadState | None: ...

    async def transition(self, thread_id: str, expected: Status, new: Status, owner: str) -> bool:
        """Set `new` only if the row is at `expected` (a missing row counts as `off`).
        Entering `starting` bumps the generation. True when this call made the change."""
        ...

    async def reset_owner(self, owner: str) -> int:
        """Mark every thread of `owner` off (its kernels died with its previous process)."""
        ...


class SqliteThreadStateStore:
    """SQLite state (one file; every transition is a single UPDATE statement)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA busy_timeout = 10000")
        await self._db.execute("PRAGMA journal_mode = WAL")
        await self._db.execute(_DDL)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("state store is not open")
        return self._db

    async def get(self, thread_id: str) -> ThreadState | None:
        async with self.db.execute(
            "SELECT thread_id, status, owner, generation, updated_at FROM sandbox_threads WHERE thread_id = ?",
            (thread_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else ThreadState(row[0], row[1], row[2], row[3], row[4])

    async def transition(self, thread_id: str, expected: Status, new: Status, owner: str) -> bool:
        now = time.time()
        bump = 1 if new == "starting" else 0
        if expected == "off":
            await self.db.execute(
                "INSERT INTO sandbox_threads VALUES (?, 'off', ?, 0, ?) ON CONFLICT (thread_id) DO NOTHING",
                (thread_id, owner, now),
            )
        cursor = await self.db.execute(
            "UPDATE sandbox_threads SET status = ?, owner = ?, generation = generation + ?, updated_at = ? "
            "WHERE thread_id = ? AND status = ?",
            (new, owner, bump, now, thread_id, expected),
        )
        return cursor.rowcount == 1

    async def reset_owner(self, owner: str) -> int:
        cursor = await self.db.execute(
            "UPDATE sandbox_threads SET status = 'off', updated_at = ? WHERE owner = ? AND status != 'off'",
            (time.time(), owner),
        )
        return cursor.rowcount


class PostgresThreadStateStore:
    """PostgreSQL state, for a state table shared with other services."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
        # Concurrent CREATE TABLE IF NOT EXISTS can still race on the catalog; serialise it.
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7301)")
            await conn.execute(_DDL)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("state store is not open")
        return self._pool

    async def get(self, thread_id: str) -> ThreadState | None:
        row = await self.pool.fetchrow(
            "SELECT thread_id, status, owner, generation, updated_at FROM sandbox_threads WHERE thread_id = $1",
            thread_id,
        )
        if row is None:
            return None
        return ThreadState(row[0], row[1], row[2], row[3], row[4])

    async def transition(self, thread_id: str, expected: Status, new: Status, owner: str) -> bool:
        now = time.time()
        bump = 1 if new == "starting" else 0
        if expected == "off":
            await self.pool.execute(
                "INSERT INTO sandbox_threads VALUES ($1, 'off', $2, 0, $3) ON CONFLICT (thread_id) DO NOTHING",
                thread_id, owner, now,
            )
        result = await self.pool.execute(
            "UPDATE sandbox_threads SET status = $1, owner = $2, generation = generation + $3, updated_at = $4 "
            "WHERE thread_id = $5 AND status = $6",
            new, owner, bump, now, thread_id, expected,
        )
        return str(result).endswith(" 1")

    async def reset_owner(self, owner: str) -> int:
        result = await self.pool.execute(
            "UPDATE sandbox_threads SET status = 'off', updated_at = $1 WHERE owner = $2 AND status != 'off'",
            time.time(), owner,
        )
        return int(str(result).rsplit(" ", 1)[-1])


def open_state_store(database_url: str) -> ThreadStateStore:
    """The store for a `sqlite:///...` or `postgresql://...` URL (not yet opened)."""
    if database_url.startswith("sqlite:///"):
        return SqliteThreadStateStore(Path(database_url.removeprefix("sqlite:///")))
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresThreadStateStore(database_url)
    raise ValueError(f"unsupported database_url: {database_url}")
