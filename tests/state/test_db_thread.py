"""SQLite's worker thread yields the core to the event loop: it runs at nice 10 (at least),
while the loop's thread keeps the process's priority."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from relaygate.state.db import SqliteDatabase


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_sqlite_worker_thread_runs_below_the_event_loop(tmp_path: Path) -> None:
    loop_nice = _nice_of_this_thread()
    db = await SqliteDatabase.open(str(tmp_path / "nice.db"))
    try:
        # an SQL function runs in the connection's own thread
        await db._conn.create_function("nice_here", 0, _nice_of_this_thread)
        row = await db.fetchrow("SELECT nice_here() AS n")
        assert row is not None and row["n"] == max(10, loop_nice)
        assert _nice_of_this_thread() == loop_nice  # the loop's thread is left as it was
    finally:
        await db.close()
