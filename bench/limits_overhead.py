"""Added latency of auth (virtual key) + limits + budget check per request.

Runs N sequential requests through the in-process pipeline with the built-in mock
provider, three ways, and prints per-request latency and the ratio to the core pipeline:
  core      - the pipeline without the auth, idempotency and limits stages (no principal)
  memory    - a virtual key (key, team, org levels; RPM, TPM, tokens/hour, budget) with
              the in-process counters
  redis     - the same with Redis counters (one Lua reserve + one Lua settle per request)
Each setup is compared with the core pipeline of the same state (other features also use
Redis when it is configured: breakers, cache), so the ratio isolates these stages.

    .venv/bin/python bench/limits_overhead.py [--requests N] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

from relaygate.config import parse_config
from relaygate.formats.openai import parse_request
from relaygate.keys.records import KeyIn, OrgIn, TeamIn
from relaygate.pipeline.context import RequestContext
from relaygate.server.bootstrap import build_gateway

SKIPPED_IN_CORE = {"auth", "idempotency", "limits"}


def config(tmp: str, redis_url: str | None) -> Any:
    state: dict[str, Any] = {"database_url": f"sqlite:///{tmp}/bench.db", "journal_dir": f"{tmp}/journal"}
    if redis_url:
        state["redis_url"] = redis_url
    return parse_config({
        "server": {"master_key": "sk-bench-master"}, "state": state,
        "providers": {"mock": {"type": "mock"}},
        "routes": {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]}},
        "pricing": {"models": {"mock-1": {"input_per_mtok": 1, "output_per_mtok": 1}}},
        "logging": {},
    })


async def run(n: int, redis_url: str | None, core: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        gw = await build_gateway(config(tmp, redis_url))
        try:
            if redis_url:
                await gw.services["redis"].flushdb()
            store = gw.services["keys"].store
            await store.create_group("orgs", OrgIn(name="o", rpm=10**9, tpm=10**12, budget_usd=10**6))
            await store.create_group("teams", TeamIn(name="t", org="o", rpm=10**9, tpm=10**12, budget_usd=10**6))
            _, token = await store.create_key(KeyIn(name="k", team="t", rpm=10**9, tpm=10**12,
                                                    tokens_per_hour=10**12, budget_usd=10**6))
            if core:
                gw.stages[:] = [s for s in gw.stages if s.name not in SKIPPED_IN_CORE]
            headers = {"authorization": f"Bearer {token}"}
            times: list[float] = []
            for i in range(n + 200):  # the first 200 warm up
                body = {"model": "mock", "messages": [{"role": "user", "content": f"request {i}"}], "max_tokens": 32}
                ctx = RequestContext(f"r{i}", "openai", body, parse_request(body), headers)
                t0 = time.perf_counter()
                await gw.pipeline.run(ctx)
                assert ctx.response is not None, ctx.status
                ctx.usage = ctx.response.usage
                await gw.pipeline.complete(ctx)
                if i >= 200:
                    times.append(time.perf_counter() - t0)
            return times
        finally:
            await gw.close()


def summary(times: list[float]) -> tuple[float, float, float]:
    qs = statistics.quantiles(times, n=100)
    return statistics.mean(times) * 1e6, qs[49] * 1e6, qs[98] * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    print(f"{args.requests} sequential requests through the in-process pipeline (mock provider)")
    print(f"{'setup':22} {'mean us':>9} {'p50 us':>9} {'p99 us':>9} {'added us (p50)':>15} {'ratio (p50)':>12}")
    for label, redis_url in (("memory", None), ("redis", args.redis)):
        core = summary(await run(args.requests, redis_url, core=True))
        full = summary(await run(args.requests, redis_url, core=False))
        for name, (mean, p50, p99) in ((f"core ({label} state)", core), (f"+ keys/limits ({label})", full)):
            print(f"{name:22} {mean:9.0f} {p50:9.0f} {p99:9.0f} {p50 - core[1]:15.0f} {p50 / core[1]:12.2f}")


if __name__ == "__main__":
    asyncio.run(main())
