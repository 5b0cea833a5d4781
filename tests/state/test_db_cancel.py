"""A task cancelled anywhere inside a SQLite transaction leaves the database usable: the
next transaction starts cleanly (aiosqlite runs a statement even when its awaiting task is
cancelled, so a cancelled `BEGIN` has still begun one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relaygate.state.db import connect


async def test_cancelled_writes_never_leave_a_transaction_open(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        rows = [(i, "x" * 50) for i in range(2000)]
        for ticks in range(12):  # cancel after 0..11 loop iterations: before, during, after BEGIN/COMMIT
            task = asyncio.create_task(db.executemany("INSERT OR IGNORE INTO t (id, v) VALUES ($1, $2)", rows))
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

            async def in_tx(row_id: int) -> None:
                async with db.transaction() as tx:
                    await tx.execute("INSERT OR IGNORE INTO t (id, v) VALUES ($1, $2)", row_id, "y")

            tx_task = asyncio.create_task(in_tx(10_000 + ticks))
            for _ in range(ticks):
                await asyncio.sleep(0)
            tx_task.cancel()
            await asyncio.gather(tx_task, return_exceptions=True)
            # whatever happened above, a new transaction works
            await db.executemany("INSERT OR IGNORE INTO t (id, v) VALUES ($1, $2)", [(20_000 + ticks, "z")])
        assert (await db.fetch("SELECT COUNT(*) AS n FROM t WHERE id >= 20000"))[0]["n"] == 12
    finally:
        await db.close()
