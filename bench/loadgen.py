"""Python load clients for what wrk cannot do.

`fixed_rate`: an open-loop client. Request i is scheduled at t0 + i/rate whether or not
earlier ones have answered, and its latency is measured from that scheduled time, not
from when it was actually sent: a stalled server (or a stalled client) shows up as
latency instead of silently lowering the rate (coordinated omission). wrk's Lua `delay()`
paces each connection in a closed loop and times from the real send, so it would hide
exactly the stalls we look for; Debian has no wrk2.

`hold_streams`: opens N streaming requests, waits for each one's first bytes, holds them
all open while sampling the server's RSS, then drains them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from harness import ForeignLoad, request_body, rss_kb


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


@dataclass
class RateResult:
    rate: float
    sent: int
    ok: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    late_ms_p99: float  # how late the client itself sent (its own jitter), for honesty
    foreign_cores: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


_counter = itertools.count()


def varied_body(model: str, stream: bool) -> bytes:
    """A different prompt each time: an exact cache misses."""
    return request_body(stream, model, f"Say hello, request {next(_counter)}.")


async def fixed_rate(url: str, headers: dict[str, str], model: str, stream: bool, rate: float, seconds: float,
                     max_conns: int = 512, timeout_s: float = 30.0,
                     on_tick: Callable[[], None] | None = None) -> RateResult:
    total = max(1, int(rate * seconds))
    lat: list[float] = []
    late: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=max_conns, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    hdrs = {"content-type": "application/json", **headers}
    foreign = ForeignLoad().__enter__()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def one(scheduled: float, body: bytes) -> None:
            nonlocal errors
            late.append(time.perf_counter() - scheduled)
            try:
                async with session.post(url, data=body, headers=hdrs) as resp:
                    await resp.read()  # whole body: the last byte of a stream
                    if resp.status != 200:
                        errors += 1
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                errors += 1
                return
            lat.append(time.perf_counter() - scheduled)

        tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter() + 0.05
        last_tick = t0
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, varied_body(model, stream))))
            if on_tick is not None and scheduled - last_tick >= 1.0:
                on_tick()
                last_tick = scheduled
        async with asyncio.timeout(timeout_s + 30):
            await asyncio.gather(*tasks, return_exceptions=True)
    foreign.__exit__()
    ms = [x * 1000 for x in lat]
    return RateResult(rate, total, len(lat), errors, percentile(ms, 50), percentile(ms, 90), percentile(ms, 99),
                      max(ms) if ms else float("nan"), percentile([x * 1000 for x in late], 99),
                      round(foreign.cores, 2))


@dataclass
class StreamsResult:
    wanted: int
    opened: int
    completed: int
    errors: int
    open_s: float
    rss_idle_mb: float
    rss_peak_mb: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


async def hold_streams(url: str, headers: dict[str, str], model: str, n: int, pids: Callable[[], list[int]],
                       hold_s: float = 3.0, open_timeout_s: float = 30.0, total_timeout_s: float = 120.0
                       ) -> StreamsResult:
    """Opens `n` streams at once, samples the summed RSS of `pids()` every 100 ms from
    before the first is opened until all are drained."""
    opened = 0
    completed = 0
    errors = 0
    all_open = asyncio.Event()
    release = asyncio.Event()
    peak = 0
    idle = rss_kb(pids())
    hdrs = {"content-type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=5)
    timeout = aiohttp.ClientTimeout(total=total_timeout_s)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb(pids()))
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def one() -> None:
            nonlocal opened, completed, errors
            try:
                async with session.post(url, data=varied_body(model, True), headers=hdrs) as resp:
                    if resp.status != 200:
                        errors += 1
                        return
                    await resp.content.readany()
                    opened += 1
                    if opened >= n:
                        all_open.set()
                    await release.wait()
                    await resp.read()
                    completed += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                errors += 1

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        tasks = [asyncio.create_task(one()) for _ in range(n)]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(open_timeout_s):
                while not all_open.is_set() and opened + errors < n:
                    await asyncio.sleep(0.05)
        open_s = time.perf_counter() - started
        await asyncio.sleep(hold_s)
        release.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(total_timeout_s):
                await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            t.cancel()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return StreamsResult(n, opened, completed, errors, round(open_s, 2), round(idle / 1024, 1),
                         round(peak / 1024, 1))
