"""Fixtures for the agent toolkit and the sandbox: real kernels, real Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from relaygate.agent.sandbox.config import SandboxConfig
from relaygate.agent.sandbox.pool import KernelPool
from relaygate.agent.sandbox.state import open_state_store

from .agent_testkit import REDIS_URL, make_config


@pytest.fixture
def config(tmp_path: Path) -> SandboxConfig:
    return make_config(tmp_path)


@pytest.fixture
async def pool(config: SandboxConfig) -> AsyncIterator[KernelPool]:
    kernels = KernelPool(config, open_state_store(config.database_url), sandboxed=True)
    await kernels.start()
    try:
        yield kernels
    finally:
        await kernels.close()


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    """A real Redis (db 15); keys are namespaced per test and deleted afterwards."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    await client.ping()
    # Other suites FLUSHDB this database; if one does so mid-test, say so plainly rather than
    # leave a puzzling count mismatch as the only clue.
    sentinel = f"relaygate-test:sentinel:{uuid.uuid4().hex}"
    await client.set(sentinel, "1", ex=600)
    try:
        yield client
    finally:
        flushed = not await client.exists(sentinel)
        keys = [key async for key in client.scan_iter(match="relaygate-test:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        if flushed:
            pytest.fail(f"{REDIS_URL} was flushed by another process during this test; its result is void")


@pytest.fixture
def test_prefix() -> str:
    return f"relaygate-test:{uuid.uuid4().hex}:"
