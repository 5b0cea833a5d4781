from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaygate.limits.counters import CounterStore, MemoryCounters, RedisCounters, open_redis
from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.keys.dbs import database_url


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    """Each counter test runs against both backends (a missing Redis fails, never skips)."""
    if request.param == "memory":
        yield MemoryCounters()
        return
    client: Any = open_redis(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    await client.flushdb()
    yield RedisCounters(client)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async for url in database_url(request.param, tmp_path, POSTGRES_URL):
        yield url
