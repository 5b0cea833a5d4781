"""What a usage-ledger row costs the database as the table grows, with the request ids the
gateway makes (milliseconds first, then random bits) against fully random ids.

The ledger's primary key is the request id. A random id lands on a random page of that
index, so once the index outgrows the page cache every insert touches a different page;
time-first ids append at the index's end. This drives `LedgerStore.insert` (the code the
ledger's flush runs) into SQLite in a temp dir, in batches of `--batch` rows, and prints
the CPU per row of the whole process (record rows built, SQLite in aiosqlite's thread)
for each slice of `--step` rows.

    .venv/bin/python bench/ledger_insert.py [--rows 400000] [--step 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable

from relaygate.server.app import request_id
from relaygate.state.db import connect
from relaygate.usage.record import UsageRecord
from relaygate.usage.store import LedgerStore


def random_id() -> str:
    return f"{random.getrandbits(96):024x}"


def rec(rid: str, i: int) -> UsageRecord:
    return UsageRecord(request_id=rid, ts=time.time(), status=200, key_id=f"key_{i % 50}", key_name="bench",
                       team=f"team{i % 7}", provider="nginx", model="gpt-4o-mini", requested_model="bench",
                       route="bench", format="openai", attempts=1, input_tokens=24, output_tokens=20,
                       cost_nusd=1234, latency_ms=1.2, ttft_ms=0.5, cache_status="miss")


async def measure(url: str, make_id: Callable[[], str], args: argparse.Namespace, label: str) -> list[float]:
    db = await connect(url)
    store = LedgerStore(db)
    await store.migrate()
    out = []
    done = 0
    while done < args.rows:
        cpu = time.process_time()
        for _ in range(args.step // args.batch):
            await store.insert([rec(make_id(), done + i) for i in range(args.batch)])
            done += args.batch
        out.append((time.process_time() - cpu) / args.step * 1e6)
        print(f"... {label}: {done:,} rows, {out[-1]:.1f} us/row", file=sys.stderr, flush=True)
    await db.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--step", type=int, default=100_000, help="rows per reported slice")
    ap.add_argument("--batch", type=int, default=500, help="rows per insert (the flush's batch)")
    args = ap.parse_args()
    args.rows -= args.rows % args.step
    with tempfile.TemporaryDirectory(prefix="relaygate-ledger-insert-") as tmp:
        results = {}
        for label, make_id in (("time-first ids (request_id)", request_id), ("random ids", random_id)):
            url = f"sqlite:///{tmp}/{label.split()[0]}.db"
            results[label] = await measure(url, make_id, args, label)
    print(f"# ledger insert, SQLite, batches of {args.batch}: CPU us per row "
          "(whole process) by rows already in the table")
    print("| rows before | " + " | ".join(results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for n in range(args.rows // args.step):
        print(f"| {n * args.step:,} | " + " | ".join(f"{v[n]:.1f}" for v in results.values()) + " |")


if __name__ == "__main__":
    asyncio.run(main())
