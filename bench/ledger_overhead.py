"""Request latency with and without cost accounting (the cost stage, the ledger stage:
record building, the journal write(2), access log, alert bookkeeping, and the background
fsync/flush to the database), as a ratio.

Two gateways built from the same config (built-in mock provider, SQLite in a temp dir) run
in this process; "without" has the `cost` and `ledger` stages removed. Rounds alternate
between them so drift hits both alike. Sequential requests give per-request latency;
concurrent ones give throughput with the background flush competing for the loop. CPU time
(the whole process, all threads: client, server, SQLite's worker) per request over each
round, the "with" round including a last flush of its records, gives their difference as
the CPU that cost accounting adds to a request (less noisy than latency on a busy machine).
Last, the ledger alone, without HTTP: CPU per record on the hot path (`LedgerStage.on_complete`:
the record built and journaled) and in the flush (the records into SQLite, its worker thread
included), the least noisy figure of the three.

    .venv/bin/python bench/ledger_overhead.py [--requests 3000] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy

from relaygate.config import parse_config
from relaygate.formats.types import ChatRequest, Message, TextPart, Usage
from relaygate.pipeline.context import Principal, RequestContext
from relaygate.routing.engine import AttemptRecord
from relaygate.routing.plan import Leaf
from relaygate.server.app import build_app
from relaygate.server.bootstrap import build_gateway
from relaygate.state.db import connect
from relaygate.usage.config import UsageConfig
from relaygate.usage.journal import Journal
from relaygate.usage.ledger import Ledger, LedgerStage
from relaygate.usage.store import LedgerStore

MASTER = "sk-bench-master"
BODY = {"model": "mock", "messages": [{"role": "user", "content": "How much does this request cost? " * 4}]}


def config(tmp: Path, name: str) -> Any:
    return parse_config({
        "server": {"master_key": MASTER},
        "state": {"database_url": f"sqlite:///{tmp}/{name}.db", "journal_dir": f"{tmp}/{name}-journal"},
        "providers": {"mock": {"type": "mock"}},
        "routes": {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]}},
        "pricing": {"models": {"mock-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
    })


async def start(tmp: Path, name: str, accounting: bool) -> tuple[TestServer, Any]:
    gw = await build_gateway(config(tmp, name))
    if not accounting:
        gw.stages[:] = [s for s in gw.stages if s.name not in ("cost", "ledger")]
    server = TestServer(build_app(gw))
    await server.start_server()
    return server, gw


async def sequential(session: aiohttp.ClientSession, url: str, n: int, stream: bool) -> list[float]:
    body = {**BODY, "stream": stream}
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.post(url, json=body) as resp:
            await resp.read()
            assert resp.status == 200
        out.append((time.perf_counter() - t) * 1000)
    return out


async def concurrent(session: aiohttp.ClientSession, url: str, n: int, c: int) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, json=BODY) as resp:
                await resp.read()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return n / (time.perf_counter() - t)


def finished_request(n: int) -> RequestContext:
    """A served, priced request as the ledger stage sees it once everything is known."""
    ctx = RequestContext(request_id=f"bench-{n:08d}", format="openai", body=BODY,
                         chat=ChatRequest(model="mock", messages=[Message("user", [TextPart("hi")])]),
                         headers=CIMultiDictProxy(CIMultiDict()))
    ctx.principal = Principal(key_id="key-1", key_name="bench", team="team-1", user="user-1")
    ctx.trace_id, ctx.route_name = "0af7651916cd43dd8448eb211c80319c", "mock"
    ctx.attempts = [AttemptRecord("mock", "mock-1", 200, "", 1.2345)]
    ctx.served, ctx.usage, ctx.cost_usd = Leaf("mock", "mock-1"), Usage(40, 12), Decimal("0.000064")
    return ctx


async def ledger_alone(tmp: Path, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """CPU microseconds per record: on the hot path, and in the flush to SQLite."""
    cfg = config(tmp, "alone")
    db = await connect(f"sqlite:///{tmp}/alone.db")
    ledger = Ledger(LedgerStore(db), Journal(tmp / "alone-journal"), UsageConfig())
    await ledger.store.migrate()
    stage = LedgerStage(cfg, ledger, [])
    hot, flush = [], []
    for r in range(rounds):
        contexts = [finished_request(r * n + i) for i in range(n)]
        cpu0 = time.process_time()
        for ctx in contexts:
            await stage.on_complete(ctx)
        cpu1 = time.process_time()
        assert await ledger.flush() == n
        hot.append((cpu1 - cpu0) / n * 1e6)
        flush.append((time.process_time() - cpu1) / n * 1e6)
    await ledger.close()
    await db.close()
    return hot, flush


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with_srv, with_gw = await start(tmp, "with", True)
        without_srv, without_gw = await start(tmp, "without", False)
        urls = {"with": str(with_srv.make_url("/v1/chat/completions")),
                "without": str(without_srv.make_url("/v1/chat/completions"))}
        lat: dict[tuple[str, bool], list[float]] = {(k, s): [] for k in urls for s in (False, True)}
        rps: dict[str, list[float]] = {k: [] for k in urls}
        cpu_us: dict[str, list[float]] = {k: [] for k in urls}  # CPU microseconds per request
        headers = {"authorization": f"Bearer {MASTER}"}
        async with aiohttp.ClientSession(headers=headers,
                                         connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:
            for k in urls:  # warm-up
                await sequential(session, urls[k], 200, False)
            for _ in range(args.rounds):
                for k in ("without", "with"):
                    cpu0 = time.process_time()
                    for stream in (False, True):
                        lat[(k, stream)] += await sequential(session, urls[k], args.requests, stream)
                    rps[k].append(await concurrent(session, urls[k], args.requests, args.concurrency))
                    if k == "with":  # its records' way into the database is part of the cost
                        await with_gw.services["ledger"].flush()
                    cpu_us[k].append((time.process_time() - cpu0) / (3 * args.requests) * 1e6)
        rows = await with_gw.services["ledger"].store.count()
        await with_srv.close()
        await without_srv.close()
        hot, flush = await ledger_alone(tmp, args.requests, args.rounds)
    print(f"ledger overhead: {args.rounds} rounds x {args.requests} requests, mock provider, SQLite ledger "
          f"({rows} rows written)")
    for stream in (False, True):
        a, b = lat[("without", stream)], lat[("with", stream)]
        kind = "stream    " if stream else "non-stream"
        print(f"  {kind} sequential latency ms  without: mean {statistics.fmean(a):.3f} p50 {pct(a, .5):.3f} "
              f"p99 {pct(a, .99):.3f} | with: mean {statistics.fmean(b):.3f} p50 {pct(b, .5):.3f} "
              f"p99 {pct(b, .99):.3f} | ratio mean {statistics.fmean(b) / statistics.fmean(a):.3f} "
              f"p50 {pct(b, .5) / pct(a, .5):.3f}")
    ra, rb = statistics.fmean(rps["without"]), statistics.fmean(rps["with"])
    print(f"  throughput at concurrency {args.concurrency}: without {ra:.0f} req/s, with {rb:.0f} req/s, "
          f"ratio {rb / ra:.3f}")
    ca, cb = statistics.fmean(cpu_us["without"]), statistics.fmean(cpu_us["with"])
    print(f"  CPU per request (process, all threads) us  without: {ca:.1f} | with: {cb:.1f} "
          f"(rounds {' '.join(f'{x:.1f}' for x in cpu_us['with'])}) | accounting adds {cb - ca:.1f}")
    print(f"  ledger alone, CPU per record us (median of {args.rounds} rounds)  hot path: "
          f"{statistics.median(hot):.2f} | flush to SQLite: {statistics.median(flush):.2f} | "
          f"total {statistics.median(hot) + statistics.median(flush):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(parser.parse_args()))
