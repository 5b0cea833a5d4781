"""Shared fixtures: real Redis/PostgreSQL (never skipped: a missing server fails the test),
and an in-process gateway on a real socket."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from relaygate.config import parse_config
from relaygate.config.models import GatewayConfig
from relaygate.server.app import build_app
from relaygate.server.bootstrap import build_gateway
from relaygate.server.front import FrontSite
from relaygate.server.gateway import Gateway

REDIS_URL = os.environ.get("RELAYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("RELAYGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MASTER = "sk-test-master"


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # a missing server is a failure, never a skip
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def postgres_url() -> str:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_URL}: {exc}")
    await conn.close()
    return POSTGRES_URL


def make_config(raw: dict[str, Any] | None = None, tmp_path: Any = None) -> GatewayConfig:
    """A config for tests: master key `sk-test-master`, the mock provider, SQLite in tmp."""
    raw = dict(raw or {})
    server = dict(raw.pop("server", {}))
    server.setdefault("master_key", MASTER)
    state = dict(raw.pop("state", {}))
    if tmp_path is not None:
        state.setdefault("database_url", f"sqlite:///{tmp_path}/relaygate.db")
        state.setdefault("journal_dir", f"{tmp_path}/journal")
    else:
        state.setdefault("database_url", "sqlite:///:memory:")
    providers = dict(raw.pop("providers", {}))
    providers.setdefault("mock", {"type": "mock"})
    routes = dict(raw.pop("routes", {}))
    routes.setdefault("mock", {"targets": [{"provider": "mock", "model": "mock-1"}]})
    return parse_config({"server": server, "state": state, "providers": providers, "routes": routes, **raw})


class FrontTestServer(TestServer):
    """aiohttp's TestServer listening through relaygate's front (server/front.py), as
    `relaygate serve` does: chat requests framed by the front, the rest by aiohttp."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__(build_app(gw))
        self.gw = gw

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(**kwargs)
        await self.runner.setup()
        sock = self.socket_factory(self.host, 0, socket.AF_INET)
        site = FrontSite(self.runner, self.gw, sock=sock)
        await site.start()
        self.port = sock.getsockname()[1]
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")


@asynccontextmanager
async def gateway_client(cfg: GatewayConfig) -> AsyncIterator[TestClient[Any, Any]]:
    """The whole gateway (every installed feature) on a real loopback socket, behind the
    same front as `relaygate serve`."""
    gw = await build_gateway(cfg)
    client: TestClient[Any, Any] = TestClient(FrontTestServer(gw))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """A small aiohttp app (a test's fake upstream) on a free loopback port: its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def auth(key: str = MASTER) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
