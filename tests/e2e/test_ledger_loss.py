"""The ledger loses nothing a client saw complete: 5,000 concurrent requests through a real
`relaygate serve`, `kill -9` in the middle, restart, and every request that completed at
the client has exactly one ledger row (SQLite and PostgreSQL). SIGTERM drains the journal
into the database before the process exits."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from tests.e2e.procs import MASTER, RELAYGATE, free_port, process

TOTAL = 5_000
KILL_AFTER = 2_500
CONCURRENCY = 64


def _config(tmp_path: Path, db_url: str) -> dict[str, Any]:
    return {
        "server": {"master_key": MASTER},
        "state": {"database_url": db_url, "journal_dir": str(tmp_path / "journal")},
        "providers": {"mock": {"type": "mock"}},
        "routes": {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]}},
        "pricing": {"models": {"mock-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
    }


@contextmanager
def serve(tmp_path: Path, cfg: dict[str, Any]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    cfg = {**cfg, "server": {**cfg["server"], "port": port}}
    path = tmp_path / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with process([*RELAYGATE, "serve", "--config", str(path)], f"http://127.0.0.1:{port}/health",
                 cwd=tmp_path, log=tmp_path / f"gateway-{port}.log") as proc:
        yield f"http://127.0.0.1:{port}", proc


async def _load(url: str, prefix: str, total: int, kill: subprocess.Popen[bytes] | None,
                kill_after: int) -> list[str]:
    """Sends `total` requests; returns the ids of those that completed (200, whole body)."""
    done: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    headers = {"authorization": f"Bearer {MASTER}"}
    body = {"model": "mock", "messages": [{"role": "user", "content": "count me in the ledger"}]}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            rid = f"{prefix}-{i:05d}"
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body,
                                        headers={**headers, "x-relaygate-request-id": rid}) as resp:
                    data = await resp.json()
                    if resp.status == 200 and data["choices"]:
                        done.append(rid)
            except (TimeoutError, aiohttp.ClientError, ValueError):
                continue
            if kill is not None and len(done) == kill_after:
                kill.send_signal(signal.SIGKILL)

    conn = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return done


async def _rows(db_url: str, prefix: str) -> list[str]:
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url[len("sqlite:///"):]) as conn:
            return [r[0] for r in conn.execute(
                "SELECT request_id FROM usage_ledger WHERE request_id LIKE ?", (prefix + "-%",))]
    conn = await asyncpg.connect(db_url)
    try:
        return [r[0] for r in await conn.fetch(
            "SELECT request_id FROM usage_ledger WHERE request_id LIKE $1", prefix + "-%")]
    finally:
        await conn.close()


async def _loss_test(tmp_path: Path, db_url: str, label: str) -> None:
    prefix = f"loss-{os.urandom(4).hex()}"
    cfg = _config(tmp_path, db_url)
    started = time.monotonic()
    with serve(tmp_path, cfg) as (url, proc):
        completed = await _load(url, prefix, TOTAL, proc, KILL_AFTER)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    killed_at = time.monotonic()
    journal = list((tmp_path / "journal").iterdir())
    assert journal, "the killed process left its journal behind"
    with serve(tmp_path, cfg) as (url, _proc):  # replays the journal on start
        rows = await _rows(db_url, prefix)
    missing = set(completed) - set(rows)
    print(f"\n[{label}] {TOTAL} requests, concurrency {CONCURRENCY}, kill -9 after {KILL_AFTER}: "
          f"{len(completed)} completed at the client, {len(rows)} ledger rows after restart, "
          f"{len(missing)} missing, {len(rows) - len(set(rows))} duplicated "
          f"(load+kill {killed_at - started:.1f}s, restart+count {time.monotonic() - killed_at:.1f}s)")
    assert len(completed) >= KILL_AFTER
    assert not missing
    assert len(rows) == len(set(rows))
    assert len(rows) < TOTAL  # the kill really cut the run short


async def test_kill_9_loses_nothing_sqlite(tmp_path: Path) -> None:
    await _loss_test(tmp_path, f"sqlite:///{tmp_path}/rg.db", "sqlite")


async def test_kill_9_loses_nothing_postgres(tmp_path: Path, postgres_url: str) -> None:
    await _loss_test(tmp_path, postgres_url, "postgresql")


async def test_sigterm_drains_the_journal(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/rg.db"
    prefix = f"drain-{os.urandom(4).hex()}"
    with serve(tmp_path, _config(tmp_path, db_url)) as (url, proc):
        completed = await _load(url, prefix, 500, None, 0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        assert proc.returncode == 0
    assert len(completed) == 500
    rows = await _rows(db_url, prefix)  # no restart: the draining process wrote them all
    assert sorted(rows) == sorted(completed)
    leftovers = [p for p in (tmp_path / "journal").iterdir() if p.stat().st_size]
    assert leftovers == []
