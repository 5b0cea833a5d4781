"""The ledger through a whole gateway: one record per request (refusals, failures, cache
hits and fallbacks included), the journal's replay, idempotent inserts, retention, and the
`/admin/usage` query — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from relaygate.config.models import GatewayConfig
from relaygate.server.gateway import GATEWAY
from relaygate.state.db import connect
from relaygate.usage import ledger as ledger_module
from relaygate.usage.config import UsageConfig
from relaygate.usage.journal import Journal
from relaygate.usage.ledger import Ledger
from relaygate.usage.record import AttemptUsage, UsageRecord
from relaygate.usage.store import LedgerStore
from tests.conftest import auth, gateway_client, make_config

ALICE_KEY = "rg-alice-key-0123456789"
BOB_KEY = "rg-bob-key-0123456789"
PRICED = {"models": {"mock-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}


def config(tmp_path: Path, db_url: str | None = None, **extra: Any) -> GatewayConfig:
    raw: dict[str, Any] = {
        "pricing": PRICED,
        "keys": [{"name": "alice", "key": ALICE_KEY, "team": "red", "user": "alice-user"},
                 {"name": "bob", "key": BOB_KEY, "team": "blue"}],
        "routes": {
            "mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
            "chain": {"strategy": "fallback", "targets": [{"provider": "mock", "model": "fail-503"},
                                                          {"provider": "mock", "model": "mock-1"}]},
            "broken": {"targets": [{"provider": "mock", "model": "fail-503"}]},
        },
        **extra,
    }
    if db_url:
        raw["state"] = {"database_url": db_url, "journal_dir": str(tmp_path / "journal")}
    return make_config(raw, tmp_path)


def chat(model: str = "mock", text: str = "hello ledger", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **kw}


def record(rid: str, ts: float | None = None, cost: int = 1000, **kw: Any) -> UsageRecord:
    return UsageRecord(request_id=rid, ts=ts if ts is not None else time.time(), status=200, key_id="k1",
                       key_name="key one", provider="mock", model="mock-1", attempts=1, input_tokens=10,
                       output_tokens=5, cost_nusd=cost, **kw)


async def _every_request_gets_one_record(tmp_path: Path, db_url: str | None) -> None:
    cfg = config(tmp_path, db_url)
    ids: dict[str, str] = {}
    t0 = time.time() - 0.001  # the PostgreSQL database keeps earlier runs' rows: query from now
    async with gateway_client(cfg) as client:
        meta = orjson.dumps({"user": "carol", "thread": "t-1", "feature": "search"}).decode()
        calls = {
            "ok": ("/v1/chat/completions", chat(), {**auth(ALICE_KEY), "x-relaygate-metadata": meta}),
            "keyuser": ("/v1/chat/completions", chat(), auth(ALICE_KEY)),
            "refused": ("/v1/chat/completions", chat(), auth("rg-not-a-key-0000000000")),
            "fallback": ("/v1/chat/completions", chat("chain"), auth(BOB_KEY)),
            "failed": ("/v1/chat/completions", chat("broken"), auth(BOB_KEY)),
            "unknown": ("/v1/chat/completions", chat("no-such-route"), auth(BOB_KEY)),
            "stream": ("/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True}),
                       auth(BOB_KEY)),
            "anthropic": ("/v1/messages", {**chat(), "max_tokens": 50}, auth(BOB_KEY)),
            # refused before the pipeline: still one record each
            "badjson": ("/v1/chat/completions", b'{"model": "mock", ', auth(BOB_KEY)),
            "nokey": ("/v1/messages", {**chat(), "max_tokens": 50}, {}),
        }
        statuses = {}
        for name, (path, body, headers) in calls.items():
            rid = f"{name}-{os.urandom(6).hex()}"
            payload: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
            resp = await client.post(path, **payload, headers={**headers, "x-relaygate-request-id": rid,
                                                               "x-relaygate-trace-id": "trace-" + name})
            await resp.read()
            statuses[name] = resp.status
            ids[name] = rid
        assert statuses == {"ok": 200, "keyuser": 200, "refused": 401, "fallback": 200, "failed": 503,
                            "unknown": 404, "stream": 200, "anthropic": 200,
                            "badjson": 400, "nokey": 401}
        gw = client.server.app[GATEWAY]
        await gw.services["ledger"].flush()
        store = LedgerStore(gw.services["db"])
        rows = {name: await store.get(rid) for name, rid in ids.items()}
        assert all(rows.values()), [n for n, r in rows.items() if r is None]

        ok = rows["ok"]
        assert ok is not None
        assert (ok["key_id"], ok["key_name"], ok["team"]) == ("config:alice", "alice", "red")
        assert (ok["user_id"], ok["thread"], ok["feature"]) == ("carol", "t-1", "search")
        assert (ok["provider"], ok["model"], ok["route"], ok["status"]) == ("mock", "mock-1", "mock", 200)
        assert ok["trace_id"] == "trace-ok"
        want_cost = ok["input_tokens"] * 1000 + ok["output_tokens"] * 2000  # nano-dollars at $1/$2 per M
        assert ok["cost_nusd"] == want_cost > 0
        assert rows["keyuser"] is not None and rows["keyuser"]["user_id"] == "alice-user"

        refused = rows["refused"]
        assert refused is not None and refused["status"] == 401 and refused["key_id"] is None
        assert refused["attempts"] == 0 and refused["cost_nusd"] == 0

        fb = rows["fallback"]
        assert fb is not None and fb["attempts"] == 2 and fb["degraded"] == 1
        attempts = orjson.loads(fb["attempt_list"])
        assert [(a["model"], a["status"], a["billed"]) for a in attempts] == [("fail-503", 503, False),
                                                                               ("mock-1", 200, True)]
        assert attempts[1]["cost_nusd"] == fb["cost_nusd"] > 0 and attempts[0]["cost_nusd"] == 0

        failed = rows["failed"]
        assert failed is not None and failed["status"] == 503 and failed["attempts"] == 1
        assert rows["unknown"] is not None and rows["unknown"]["status"] == 404
        stream = rows["stream"]
        assert stream is not None and stream["stream"] == 1 and stream["output_tokens"] > 0
        assert stream["ttft_ms"] is not None and stream["cost_nusd"] > 0
        assert rows["anthropic"] is not None and rows["anthropic"]["format"] == "anthropic"
        assert rows["badjson"] is not None and (rows["badjson"]["status"], rows["badjson"]["attempts"]) == (400, 0)
        nokey = rows["nokey"]
        assert nokey is not None and (nokey["status"], nokey["format"], nokey["requested_model"]) == (
            401, "anthropic", "mock")

        # the admin query over the same rows
        resp = await client.get(f"/admin/usage?by=key&since={t0}", headers=auth())
        assert resp.status == 200
        data = (await resp.json())["data"]
        by_key = {r["key_id"]: r for r in data}
        assert set(by_key) >= {"config:alice", "config:bob", None}
        alice = by_key["config:alice"]
        assert set(alice) == {"group", "requests", "refused", "input_tokens", "output_tokens",
                              "cache_read_tokens", "cache_write_tokens", "cost_usd", "key_id", "key_name"}
        assert alice["group"] == "config:alice" and alice["key_name"] == "alice" and alice["requests"] == 2
        assert by_key[None]["refused"] == 3
        bob = by_key["config:bob"]
        assert bob["requests"] == 5 and bob["refused"] == 1  # the unknown route
        assert abs(alice["cost_usd"] - (ok["cost_nusd"] + rows["keyuser"]["cost_nusd"]) / 1e9) < 1e-12

        users = {r["group"]: r for r in (await (await client.get(f"/admin/usage?by=user&since={t0}",
                                                                 headers=auth())).json())["data"]}
        assert users["carol"]["requests"] == 1 and users["alice-user"]["requests"] == 1
        teams = (await (await client.get(f"/admin/usage?by=team&since={t0}", headers=auth())).json())["data"]
        assert {r["group"] for r in teams} >= {"red", "blue"}
        assert "by" not in teams[0]
        days = (await (await client.get(f"/admin/usage?by=day&since={t0}", headers=auth())).json())["data"]
        assert sum(r["requests"] for r in days) == len(calls)
        future = (await (await client.get("/admin/usage?by=day&since=2999-01-01", headers=auth())).json())
        assert future["data"] == []
        assert (await client.get("/admin/usage?by=colour", headers=auth())).status == 400
        assert (await client.get("/admin/usage?by=key", headers=auth(BOB_KEY))).status == 401


async def test_every_request_gets_one_record_sqlite(tmp_path: Path) -> None:
    await _every_request_gets_one_record(tmp_path, None)


async def test_every_request_gets_one_record_postgres(tmp_path: Path, postgres_url: str) -> None:
    await _every_request_gets_one_record(tmp_path, postgres_url)


async def _store(tmp_path: Path, db_url: str | None) -> LedgerStore:
    db = await connect(db_url or f"sqlite:///{tmp_path}/ledger.db")
    store = LedgerStore(db)
    await store.migrate()
    return store


async def _journal_replays_what_a_dead_process_left(tmp_path: Path, db_url: str | None) -> None:
    store = await _store(tmp_path, db_url)
    try:
        journal_dir = tmp_path / "j"
        prefix = os.urandom(4).hex()
        # a "dead" process: records written, never flushed, its segment lock released
        dead = Journal(journal_dir)
        for i in range(25):
            dead.append(record(f"{prefix}-{i}").to_json())
        os.close(dead._fd)  # what the kernel does on kill -9
        ledger = Ledger(store, Journal(journal_dir), UsageConfig(batch_size=10))
        await ledger.start()  # replays on start
        ids = [f"{prefix}-{i}" for i in range(25)]
        found = [await store.get(i) for i in ids]
        assert all(found)
        assert [p.name for p in journal_dir.iterdir() if p != ledger.journal.active] == []
        # replaying the same records again inserts nothing new
        before = await store.count()
        again = Journal(journal_dir)
        for i in ids:
            again.append(record(i, cost=999).to_json())
        await again.close()
        await ledger.flush()
        assert await store.count() == before
        row = await store.get(ids[0])
        assert row is not None and row["cost_nusd"] == 1000
        await ledger.close()
    finally:
        await store.db.close()


async def test_journal_replay_and_idempotence_sqlite(tmp_path: Path) -> None:
    await _journal_replays_what_a_dead_process_left(tmp_path, None)


async def test_journal_replay_and_idempotence_postgres(tmp_path: Path, postgres_url: str) -> None:
    await _journal_replays_what_a_dead_process_left(tmp_path, postgres_url)


async def test_a_live_process_segment_is_not_flushed_by_another(tmp_path: Path) -> None:
    store = await _store(tmp_path, None)
    try:
        live = Journal(tmp_path / "j")
        live.append(record("held").to_json())
        other = Ledger(store, Journal(tmp_path / "j"), UsageConfig())
        await other.flush()
        assert await store.get("held") is None  # still the live process's active segment
        await live.rotate()
        await other.flush()
        assert await store.get("held") is not None
        await live.close()
        await other.close()
    finally:
        await store.db.close()


async def test_journal_line_is_written_before_flush_and_survives_close_without_db(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.append(record("r1").to_json())
    assert journal.active is not None
    lines = journal.active.read_bytes().splitlines()
    assert UsageRecord.from_json(lines[0]).request_id == "r1"
    await journal.close()
    assert list((tmp_path / "j").iterdir())  # kept for the next start


async def test_record_round_trips_through_json() -> None:
    rec = record("x", attempt_list=(AttemptUsage("p", "m", 503, 1.5, message="boom"),), metadata={"a": 1})
    assert UsageRecord.from_json(rec.to_json()) == rec
    assert rec.cost_usd == Decimal("0.000001000")
    assert rec.event()["cost_usd"] == "0.000001000"


def test_kept_records_leave_the_collector_next_to_nothing() -> None:
    """A record stays in memory until its segment is flushed: as dataclasses, six tracked
    objects each, which every collection of the youngest generation walked."""
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects(generation=0))
        kept = []
        for i in range(1000):
            rec = record(f"r{i}", attempt_list=(AttemptUsage("p", "m", 200, 1.5, billed=True),),
                         metadata={"user": "u"})
            rec.to_json()
            kept.append(rec)
        tracked = len(gc.get_objects(generation=0)) - before
    finally:
        gc.enable()
    assert tracked < 1.5 * len(kept), f"{tracked / len(kept):.1f} tracked objects per kept record"
    assert not gc.is_tracked(kept[0]) and not gc.is_tracked(kept[0].attempt_list[0])
    gc.collect()
    assert not gc.is_tracked(kept[0].attempt_list)  # the tuple, once the collector has seen it


async def test_retention_deletes_old_records(tmp_path: Path) -> None:
    store = await _store(tmp_path, None)
    try:
        now = time.time()
        await store.insert([record("old", ts=now - 40 * 86400), record("new", ts=now)])
        ledger = Ledger(store, Journal(tmp_path / "j"), UsageConfig(retention_days=30))
        await ledger._retention()
        assert await store.get("old") is None and await store.get("new") is not None
        await ledger.close()
    finally:
        await store.db.close()


async def test_usage_query_refused_cache_hits_and_since(tmp_path: Path) -> None:
    store = await _store(tmp_path, None)
    try:
        now = time.time()
        await store.insert([
            record("a", team="t1", cost=1_500_000_000),
            record("b", team="t1", cost=500_000_000, cache_read_tokens=4),
            UsageRecord("c", now, 429, key_id="k1", key_name="key one", team="t1"),
            UsageRecord("d", now, 200, key_id="k1", team="t1", cache_status="hit-exact"),
            record("e", ts=now - 10 * 86400, team="t1"),
        ])
        rows = await store.spend("team", since=now - 86400)
        assert len(rows) == 1
        r = rows[0].as_dict("team")
        assert r == {"group": "t1", "requests": 4, "refused": 1, "input_tokens": 20, "output_tokens": 10,
                     "cache_read_tokens": 4, "cache_write_tokens": 0, "cost_usd": 2.0}
    finally:
        await store.db.close()


async def test_own_segments_are_inserted_from_memory_others_read_back(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _store(tmp_path, None)
    parsed: list[str] = []
    parse = ledger_module._parse

    def counting_parse(data: bytes, name: str) -> list[UsageRecord]:
        parsed.append(name)
        return parse(data, name)

    monkeypatch.setattr(ledger_module, "_parse", counting_parse)
    try:
        ledger = Ledger(store, Journal(tmp_path / "j"), UsageConfig())
        for i in range(3):
            ledger.record(record(f"mem-{i}"))
        assert await ledger.flush() == 3 and parsed == []  # this process's segment: from memory
        ledger.journal.max_bytes = 1  # a segment too big to keep in memory is read back
        ledger.record(record("big-0"))
        ledger.record(record("big-1"))
        assert await ledger.flush() == 2 and len(parsed) == 1
        ledger.journal.max_bytes = 1 << 20
        ledger.record(record("retry"))
        insert = store.insert

        async def down(records: Any) -> None:
            raise OSError("database down")

        monkeypatch.setattr(store, "insert", down)
        with pytest.raises(OSError):
            await ledger.flush()
        monkeypatch.setattr(store, "insert", insert)
        # the failed flush handed its in-memory copy back: the retry reads the segment
        assert await ledger.flush() == 1 and len(parsed) == 2
        for rid in ("mem-0", "mem-1", "mem-2", "big-0", "big-1", "retry"):
            assert await store.get(rid) is not None, rid
        assert [p for p in (tmp_path / "j").iterdir() if p != ledger.journal.active] == []
        await ledger.close()
    finally:
        await store.db.close()


async def test_close_lets_a_flush_under_way_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled inside a database transaction, a flush could leave it open (and the final
    flush on SIGTERM would fail): `close` waits for it instead."""
    store = await _store(tmp_path, None)
    try:
        ledger = Ledger(store, Journal(tmp_path / "j"), UsageConfig(flush_interval_s=0.01))
        await ledger.start()
        started, cancelled = asyncio.Event(), []
        insert = store.insert

        async def slow(records: Any) -> None:
            started.set()
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            await insert(records)

        monkeypatch.setattr(store, "insert", slow)
        ledger.record(record("draining"))
        await started.wait()
        await ledger.close()
        assert cancelled == [] and await store.get("draining") is not None
    finally:
        await store.db.close()


@pytest.fixture
def journal_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of records in each write(2) to a journal."""
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(bytes(data).count(b"\n"))
        return real_write(fd, data)

    monkeypatch.setattr("relaygate.usage.journal.os.write", counting_write)
    return writes


async def test_group_commit_writes_a_turns_records_once_before_their_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_writes: list[int]) -> None:
    store = await _store(tmp_path, None)
    writes = journal_writes
    monkeypatch.setattr(ledger_module.Journal, "append", None)  # the hot path must not write per record
    try:
        ledger = Ledger(store, Journal(tmp_path / "j"), UsageConfig())
        released: list[tuple[str, int]] = []
        ledger.after_durable(lambda: released.append(("idle", len(writes))))  # nothing staged: at once
        assert released == [("idle", 0)]
        for i in range(3):
            ledger.record(record(f"turn-{i}"))
            ledger.after_durable(lambda i=i: released.append((f"answer-{i}", len(writes))))
        assert writes == [] and len(released) == 1  # staged: no answer leaves before the write
        await ledger.durable()
        assert writes == [3]  # the three records in one write(2)
        assert released[1:] == [("answer-0", 1), ("answer-1", 1), ("answer-2", 1)]  # each after it
        ledger.record(record("next-turn"))
        await asyncio.sleep(0)
        assert writes == [3, 1]
        assert await ledger.flush() == 4
        for rid in ("turn-0", "turn-1", "turn-2", "next-turn"):
            assert await store.get(rid) is not None
        await ledger.close()
    finally:
        await store.db.close()


async def test_work_after_answers_runs_after_the_turns_answers_in_the_same_turn(
        tmp_path: Path, journal_writes: list[int], caplog: pytest.LogCaptureFixture) -> None:
    store = await _store(tmp_path, None)
    try:
        ledger = Ledger(store, Journal(tmp_path / "j"), UsageConfig())
        order: list[str] = []
        ledger.after_answers(lambda: order.append("later-first"))  # queued before any record
        ledger.record(record("a"))
        ledger.after_durable(lambda: order.append("answer-a"))
        ledger.after_answers(lambda: 1 / 0)  # a failing one is logged, the rest still run
        ledger.record(record("b"))
        ledger.after_durable(lambda: order.append("answer-b"))
        ledger.after_answers(lambda: order.append(f"later-last {len(journal_writes)}"))
        assert order == []
        loop_turns = 0

        def count() -> None:
            nonlocal loop_turns
            loop_turns += 1
        asyncio.get_running_loop().call_soon(count)  # queued after the one journal write
        await asyncio.sleep(0)
        assert journal_writes == [2]
        assert order == ["answer-a", "answer-b", "later-first", "later-last 1"]
        assert loop_turns == 1  # everything ran in the callback queued first
        assert "work deferred after an answer failed" in caplog.text
        ledger.after_answers(lambda: order.append("alone"))  # nothing staged: still on the next turn
        assert order[-1] != "alone"
        await asyncio.sleep(0)
        assert order[-1] == "alone" and journal_writes == [2]
        await ledger.close()
    finally:
        await store.db.close()


async def test_concurrent_requests_share_journal_writes(tmp_path: Path, journal_writes: list[int]) -> None:
    writes = journal_writes
    async with gateway_client(config(tmp_path)) as client:
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat(text=f"q{i}"),
                                                     headers=auth()) for i in range(40)))
        assert [a.status for a in answers] == [200] * 40
        ledger = client.server.app[GATEWAY].services["ledger"]
        await ledger.flush()
        assert sum(writes) == 40 and len(writes) < 40  # every record written, several per write(2)


async def _hourly_spend_from_the_ts_index(tmp_path: Path, db_url: str | None) -> None:
    store = await _store(tmp_path, db_url)
    try:
        hour = random.randrange(100_000, 200_000)  # an hour of its own in the past, as runs share PostgreSQL
        tag = os.urandom(4).hex()
        await store.insert([
            record(f"hs-before-{tag}", ts=hour * 3600 - 1, cost=1),
            record(f"hs-a-{tag}", ts=hour * 3600, cost=10), record(f"hs-b-{tag}", ts=hour * 3600 + 3599.5, cost=20),
            record(f"hs-next-{tag}", ts=(hour + 1) * 3600 + 7, cost=300),
        ])
        got = await store.hourly_spend(hour * 3600 + 1800)  # from the hour that holds `since`, whole
        assert got[hour] == 30 and got[hour + 1] == 300 and hour - 1 not in got
        if store.db.dialect == "sqlite":
            names = await store.db.fetch("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            names = await store.db.fetch("SELECT indexname AS name FROM pg_indexes WHERE tablename = 'usage_ledger'")
        indexes = {r["name"] for r in names}
        assert "usage_ledger_ts" in indexes and "usage_ledger_hour" not in indexes  # one index less per insert
    finally:
        await store.db.close()


async def test_hourly_spend_from_the_ts_index_sqlite(tmp_path: Path) -> None:
    await _hourly_spend_from_the_ts_index(tmp_path, None)


async def test_hourly_spend_from_the_ts_index_postgres(tmp_path: Path, postgres_url: str) -> None:
    await _hourly_spend_from_the_ts_index(tmp_path, postgres_url)
