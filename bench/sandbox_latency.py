"""Sandbox latency: cold start (new thread -> first cell answered) and warm cell round trip.

    .venv/bin/python bench/sandbox_latency.py [--cold 10] [--warm 300] [--no-mcp]

Measures twice: in process (KernelPool, i.e. bubblewrap + kernel + ZMQ IPC) and through the
real MCP client over stdio against `relaygate sandbox serve` (adds JSON-RPC and the SDK).
Targets: cold < 2 s, warm < 20 ms. Must run as root (bubblewrap, per-thread uids).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from relaygate.agent.sandbox.config import SandboxConfig
from relaygate.agent.sandbox.pool import KernelPool
from relaygate.agent.sandbox.state import open_state_store


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(
        f"{name:<28} n={len(ms):<4} p50={_pct(ms, 0.5):8.2f} ms  p99={_pct(ms, 0.99):8.2f} ms  "
        f"mean={statistics.fmean(ms):8.2f} ms  max={max(ms):8.2f} ms"
    )


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def bench_pool(root: Path, cold: int, warm: int) -> None:
    config = SandboxConfig(work_root=root / "pool", database_url=f"sqlite:///{root / 'pool.db'}", instance="bench")
    pool = KernelPool(config, open_state_store(config.database_url), sandboxed=True)
    await pool.start()
    try:
        cold_samples = []
        for i in range(cold):
            cold_samples.append(await timed(lambda i=i: pool.run_cell(f"cold-{i}", "1 + 1", 60)))  # type: ignore[misc]
            await pool.stop_thread(f"cold-{i}")
        await pool.run_cell("warm", "x = 0", 60)
        warm_samples = [await timed(lambda: pool.run_cell("warm", "x += 1\nx", 60)) for _ in range(warm)]
    finally:
        await pool.close()
    report("in-process cold start", cold_samples)
    report("in-process warm cell", warm_samples)


async def bench_mcp(root: Path, cold: int, warm: int) -> None:
    config = root / "mcp.yaml"
    config.write_text(
        f"sandbox:\n  work_root: {root / 'mcp'}\n  database_url: sqlite:///{root / 'mcp.db'}\n  instance: bench-mcp\n"
    )
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "relaygate.agent.cli", "serve", "--config", str(config)]
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def cell(code: str, thread: str) -> None:
            result = await session.call_tool(
                "notebook_run_cell", {"code": code, "description": "bench", "thread_id": thread}
            )
            if result.isError:
                raise RuntimeError(str(result.content))

        cold_samples = [await timed(lambda i=i: cell("1 + 1", f"cold-{i}")) for i in range(cold)]  # type: ignore[misc]
        await cell("x = 0", "warm")
        warm_samples = [await timed(lambda: cell("x += 1\nx", "warm")) for _ in range(warm)]
    report("MCP stdio cold start", cold_samples)
    report("MCP stdio warm cell", warm_samples)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--no-mcp", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relaygate-bench-") as tmp:
        root = Path(tmp)
        await bench_pool(root, args.cold, args.warm)
        if not args.no_mcp:
            await bench_mcp(root, args.cold, args.warm)


if __name__ == "__main__":
    asyncio.run(main())
