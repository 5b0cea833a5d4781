"""The race both setups run: N concurrent requests against a key with a TPM limit, then
against a key with a budget; returns what was admitted and what was spent."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

PROMPT = "REPLY_WORDS 100"  # the mock answers exactly 100 tokens
MAX_TOKENS = 100
# $1000 per million tokens (a token costs $0.001), so a request costs about $0.104
PRICING = {"models": {"mock-1": {"input_per_mtok": 1000, "output_per_mtok": 1000}}}


@dataclass
class RaceResult:
    admitted: int
    refused: int
    tokens: int  # provider-reported tokens of admitted requests
    cost: Decimal  # x-relaygate-cost-usd of admitted requests
    refusal_types: set[str]
    other: list[int]


async def race(urls: list[str], key: str, n: int = 200) -> RaceResult:
    body = {"model": "mock", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
    result = RaceResult(0, 0, 0, Decimal(0), set(), [])
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(url: str) -> None:
            await start.wait()
            resp = await client.post(f"{url}/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {key}"})
            data: Any = resp.json()
            if resp.status_code == 200:
                result.admitted += 1
                result.tokens += data["usage"]["total_tokens"]
                result.cost += Decimal(resp.headers["x-relaygate-cost-usd"])
            elif resp.status_code == 429:
                result.refused += 1
                result.refusal_types.add(data["error"]["type"])
            else:
                result.other.append(resp.status_code)

        tasks = [asyncio.create_task(one(url)) for url, _ in zip(itertools.cycle(urls), range(n), strict=False)]
        await asyncio.sleep(0.05)
        start.set()
        await asyncio.gather(*tasks)
    return result
