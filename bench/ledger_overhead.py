"""Request latency with and without cost accounting (the cost stage, the ledger stage:
record building, the journal write(2), access log, alert bookkeeping, and the background
fsync/flush to the database), as a ratio.

Two gateways built from the same config (built-in mock provider, SQLite in a temp dir) run
in this process; "without" has the `cost` and `ledger` stages removed. Rounds alternate
between them so drift hits both alike. Sequential requests give per-request latency;
concurrent ones give throughput with the background flush competing for the loop.

    .venv/bin/python bench/ledger_overhead.py [--requests 3000] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from relaygate.config import parse_config
from relaygate.server.app import build_app
from relaygate.server.bootstrap import build_gateway

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
        headers = {"authorization": f"Bearer {MASTER}"}
        async with aiohttp.ClientSession(headers=headers,
                                         connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:
            for k in urls:  # warm-up
                await sequential(session, urls[k], 200, False)
            for _ in range(args.rounds):
                for k in ("without", "with"):
                    for stream in (False, True):
                        lat[(k, stream)] += await sequential(session, urls[k], args.requests, stream)
                    rps[k].append(await concurrent(session, urls[k], args.requests, args.concurrency))
        rows = await with_gw.services["ledger"].store.count()
        await with_srv.close()
        await without_srv.close()
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
