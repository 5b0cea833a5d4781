"""The shared upstream client against a real local server: deadlines per phase (first
byte, then the total for the body), and connection errors mapped to 502."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from relaygate.errors import UpstreamError
from relaygate.providers.base import UpstreamRequest
from relaygate.providers.http import Deadlines, HttpTransport
from tests.conftest import serve_app

DEADLINES = Deadlines(connect_s=1.0, first_byte_s=0.3, total_s=0.8)


async def _slow_head(request: web.Request) -> web.Response:
    await asyncio.sleep(1.0)
    return web.Response(body=b"{}")


async def _slow_body(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "application/json"})
    await resp.prepare(request)
    for _ in range(10):  # a trickle that outlasts the total deadline, each step inside first-byte
        await resp.write(b" ")
        await asyncio.sleep(0.2)
    await resp.write_eof()
    return resp


async def _ok(request: web.Request) -> web.Response:
    return web.Response(body=b'{"ok": true}', content_type="application/json")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/slow-head", _slow_head)
    app.router.add_post("/slow-body", _slow_body)
    app.router.add_post("/ok", _ok)
    async with serve_app(app) as url:
        yield url


def post(url: str) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-type": "application/json"}, b"{}", False)


async def test_each_phase_has_its_deadline(upstream: str) -> None:
    transport = HttpTransport()
    try:
        ok = await transport.send(post(upstream + "/ok"), DEADLINES)
        assert ok.status == 200 and ok.body == b'{"ok": true}'
        with pytest.raises(UpstreamError) as head:
            await transport.send(post(upstream + "/slow-head"), DEADLINES)
        assert head.value.status == 504 and "before answering" in head.value.message
        with pytest.raises(UpstreamError) as body:
            await transport.send(post(upstream + "/slow-body"), DEADLINES)
        assert body.value.status == 504 and "while sending its answer" in body.value.message
        again = await transport.send(post(upstream + "/ok"), DEADLINES)  # the pool is still usable
        assert again.status == 200
    finally:
        await transport.close()


async def test_refused_connection_is_a_502() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = HttpTransport()
    try:
        with pytest.raises(UpstreamError) as err:
            await transport.send(post(f"http://127.0.0.1:{port}/x"), DEADLINES)
        assert err.value.status == 502 and "cannot connect" in err.value.message
    finally:
        await transport.close()
