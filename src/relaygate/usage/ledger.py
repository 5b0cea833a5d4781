"""The usage ledger: one record per client request, never lost.

`LedgerStage` sits before `auth`, so its `on_complete` runs for every request (refusals
too) once everything else is known, and before the answer's last byte is written. The
records of the requests that complete in one turn of the event loop go to the journal in
one write(2) at the end of that turn (group commit), and the answers of those requests
are released only after it (`after_durable`, `durable`): an answer a client has seen
always has its record on disk. The `Ledger`'s background tasks fsync
the journal at least every second and move closed segments into the database in batches
(idempotent inserts), deleting a segment only after its rows are committed. The records of
a segment this process wrote are inserted from memory; segments left by a previous process
are read back and parsed (replayed on start). On close (SIGTERM) everything is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from relaygate.config.models import GatewayConfig
from relaygate.observability.metrics import GatewayMetrics
from relaygate.pipeline.context import RequestContext
from relaygate.usage.config import UsageConfig
from relaygate.usage.journal import Journal, claim
from relaygate.usage.record import UsageRecord, record_from
from relaygate.usage.store import LedgerStore

log = logging.getLogger("relaygate.usage")
RecordObserver = Callable[[UsageRecord], None]
_RETENTION_EVERY_S = 3600.0


class Ledger:
    def __init__(self, store: LedgerStore, journal: Journal[UsageRecord], cfg: UsageConfig,
                 metrics: GatewayMetrics | None = None) -> None:
        self.store = store
        self.journal = journal
        self.cfg = cfg
        self.metrics = metrics
        self._unjournaled: list[UsageRecord] = []  # only when the journal cannot be written
        # group commit: records of this turn of the loop, and what waits for them
        self._staged_lines: list[bytes] = []
        self._staged: list[UsageRecord] = []
        self._after: list[Callable[[], None]] = []
        self._later: list[Callable[[], None]] = []  # after_answers
        self._scheduled = False  # write_staged is queued on the loop
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._last_retention = 0.0
        self._closed = False

    # --- the hot path ---------------------------------------------------------------------
    def record(self, rec: UsageRecord) -> None:
        """Stages the record for this turn's journal write; the caller releases its answer
        through `after_durable` or `durable`."""
        self._schedule()
        self._staged_lines.append(rec.to_json())
        self._staged.append(rec)
        if self.metrics is not None:
            self.metrics.ledger_records.inc()

    def after_answers(self, fn: Callable[[], None]) -> None:
        """Runs `fn` at the end of this turn's journal write, after the answers released by
        it are written: work a request does for later ones (cache stores, metrics) kept off
        its own latency."""
        self._later.append(fn)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.write_staged)

    def after_durable(self, fn: Callable[[], None]) -> None:
        """Runs `fn` once every record staged so far is in the journal: at once if none waits."""
        if self._staged:
            self._after.append(fn)
        else:
            fn()

    async def durable(self) -> None:
        """Returns once every record staged so far is in the journal."""
        if self._staged:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def release() -> None:
                if not done.done():
                    done.set_result(None)

            self._after.append(release)
            await done

    def write_staged(self) -> None:
        """One write(2) for the records staged since the last one, then the answers that
        waited for them, then the work put `after_answers`."""
        self._scheduled = False
        if self._staged:
            lines, records, after = self._staged_lines, self._staged, self._after
            self._staged_lines, self._staged, self._after = [], [], []
            try:
                self.journal.append_many(lines, records)
            except OSError as exc:  # disk full, journal removed: keep them in memory, insert directly
                log.error("usage journal write failed (%s); %d records kept in memory", exc, len(records))
                self._unjournaled.extend(records)
            _run_all(after, "releasing an answer after the journal write failed")
        if self._later:
            later, self._later = self._later, []
            _run_all(later, "work deferred after an answer failed")

    # --- background ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.migrate()
        await self.flush()  # replay what a previous process left behind
        self._tasks = [asyncio.create_task(self._fsync_loop(), name="usage-journal-fsync"),
                       asyncio.create_task(self._flush_loop(), name="usage-ledger-flush")]

    async def _fsync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.fsync_interval_s)
            try:
                await self.journal.sync()
            except OSError as exc:
                log.error("usage journal fsync failed: %s", exc)

    async def _flush_loop(self) -> None:
        delay = self.cfg.flush_interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._flush_lock:  # `close` waits for this, never cancels it midway
                    await self._flush()
                    await self._retention()
                delay = self.cfg.flush_interval_s
            except Exception as exc:  # the database is down: the journal keeps everything
                if self.metrics is not None:
                    self.metrics.ledger_flush_errors.inc()
                log.warning("usage ledger flush failed, will retry: %s", exc)
                delay = min(delay * 2, 30.0)

    async def flush(self) -> int:
        """Rotates the active segment and writes every closed segment to the database;
        returns the number of records written."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        self.write_staged()
        if not self._closed:
            await self.journal.rotate()
        written = 0
        for path, kept in self.journal.take_closed():
            with claim(path, read=kept is None) as data:
                if data is None:
                    continue
                # this process's own segment: the records it appended, no need to parse them
                records = kept if kept is not None else _parse(data, path.name)
                for i in range(0, len(records), self.cfg.batch_size):
                    await self.store.insert(records[i:i + self.cfg.batch_size])
                path.unlink(missing_ok=True)
                written += len(records)
        if self._unjournaled:
            pending, self._unjournaled = self._unjournaled, []
            try:
                await self.store.insert(pending)
            except BaseException:
                self._unjournaled = pending + self._unjournaled
                raise
            written += len(pending)
        if self.metrics is not None:
            self.metrics.ledger_flushed.inc(written)
            self.metrics.ledger_backlog.set(self.journal.backlog_bytes())
        return written

    async def _retention(self) -> None:
        days = self.cfg.retention_days
        now = time.time()
        if not days or now - self._last_retention < _RETENTION_EVERY_S:
            return
        self._last_retention = now
        deleted = await self.store.delete_before(now - days * 86400)
        if deleted:
            log.info("usage retention: deleted %d records older than %d days", deleted, days)

    async def close(self) -> None:
        """Drains: stops the loops, flushes everything, closes the journal. A flush under
        way finishes first: cancelled inside a database transaction, it could leave that
        transaction open and make the final flush fail."""
        async with self._flush_lock:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            self._tasks = []
            try:
                await self._flush()
            except Exception as exc:  # kept in the journal for the next start
                log.error("usage ledger could not flush on close (kept in the journal): %s", exc)
            self._closed = True
        await self.journal.close()


def _run_all(fns: list[Callable[[], None]], what: str) -> None:
    for fn in fns:
        try:
            fn()
        except Exception:
            log.exception(what)


def _parse(data: bytes, name: str) -> list[UsageRecord]:
    records = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(UsageRecord.from_json(line))
        except Exception as exc:  # a torn last line after a machine crash
            log.error("usage journal %s line %d unreadable, skipped: %s", name, n, exc)
    return records


class LedgerStage:
    """Before `auth`: its `on_complete` runs for every request, after every later stage."""

    name = "ledger"
    observes_refusals = True

    def __init__(self, cfg: GatewayConfig, ledger: Ledger | None, observers: list[RecordObserver]) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.observers = observers

    async def on_request(self, ctx: RequestContext) -> None:
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        rec = record_from(ctx, self.cfg)
        if self.ledger is None:
            self._observe(rec)
        else:  # the record before the answer, the observers (log, trace, alerts) after it
            self.ledger.record(rec)
            if self.observers:
                self.ledger.after_answers(lambda: self._observe(rec))

    def _observe(self, rec: UsageRecord) -> None:
        for observe in self.observers:
            try:
                observe(rec)
            except Exception:  # an observer (log, trace, alert) never fails a request
                log.exception("usage observer failed for request %s", rec.request_id)


def access_log(rec: UsageRecord) -> None:
    """One JSON line per request (`relaygate.access`), with request and trace ids."""
    if not _ACCESS.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "request_id": rec.request_id, "trace_id": rec.trace_id, "route": rec.route or rec.requested_model,
        "provider": rec.provider, "model": rec.model, "status": rec.status, "key_id": rec.key_id,
        "team": rec.team, "user": rec.user, "attempts": rec.attempts, "cache": rec.cache_status,
        "latency_ms": rec.latency_ms, "ttft_ms": rec.ttft_ms, "input_tokens": rec.input_tokens,
        "output_tokens": rec.output_tokens, "cost_usd": f"{rec.cost_usd:.9f}", "degraded": rec.degraded,
    }
    if rec.error:
        fields["error"] = rec.error
    _ACCESS.info("%s %s -> %d", rec.format, rec.route or rec.requested_model, rec.status,
                 extra={"fields": fields})


_ACCESS = logging.getLogger("relaygate.access")
