"""Budget spend that survives a restart when the counters live in process memory.

Settled spend (never reservations) is added to `rg_spend` in the gateway database in the
background, at most a second after it happened, and loaded back into the in-memory
counters at start. With Redis the counters themselves are shared and kept by Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from relaygate.limits.counters import MemoryCounters
from relaygate.limits.stage import Held, nano
from relaygate.pipeline.context import RequestContext
from relaygate.state.db import Database

log = logging.getLogger("relaygate.limits")

MIGRATIONS = [
    "CREATE TABLE rg_spend (counter TEXT PRIMARY KEY, spent_nano BIGINT NOT NULL, "
    "expires_at DOUBLE PRECISION NOT NULL)",
]


class SpendJournal:
    def __init__(self, db: Database, flush_every_s: float = 1.0) -> None:
        self.db = db
        self.flush_every_s = flush_every_s
        self._pending: dict[str, tuple[int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, counters: MemoryCounters) -> None:
        await self.db.migrate("limits", MIGRATIONS)
        now = time.time()
        await self.db.execute("DELETE FROM rg_spend WHERE expires_at <= $1", now)
        for row in await self.db.fetch("SELECT counter, spent_nano, expires_at FROM rg_spend"):
            counters.seed(str(row["counter"]), int(row["spent_nano"]), float(row["expires_at"]))
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def after_settle(self, ctx: RequestContext, held: Held) -> None:
        cost = 0 if ctx.cost_usd is None else nano(ctx.cost_usd)
        if not cost:
            return
        for x in held.planned:
            if x.kind == "budget":
                spent, _ = self._pending.get(x.check.key, (0, 0.0))
                self._pending[x.check.key] = (spent + cost, x.window.end + 86400.0)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self.db.executemany(
                "INSERT INTO rg_spend (counter, spent_nano, expires_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (counter) DO UPDATE SET spent_nano = rg_spend.spent_nano + excluded.spent_nano",
                [(k, v, exp) for k, (v, exp) in batch.items()])
        except Exception as exc:  # keep it for the next flush
            log.warning("could not record budget spend (%s); retrying", type(exc).__name__)
            for k, (v, exp) in batch.items():
                spent, _ = self._pending.get(k, (0, exp))
                self._pending[k] = (spent + v, exp)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every_s)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
