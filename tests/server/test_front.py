"""The lean front over raw sockets: chat requests framed by it, everything else handed to
aiohttp mid-connection, pipelining, requests split into single bytes, bodies it leaves to
aiohttp (chunked, 100-continue), 413, `connection: close`, a client gone mid-stream, and
shutdown waiting for a request in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from relaygate.server.front import FrontSite
from tests.conftest import MASTER, gateway_client, make_config

CHAT = orjson.dumps({"model": "mock", "messages": [{"role": "user", "content": "hello"}]})
STREAM = orjson.dumps({"model": "mock", "stream": True, "messages": [{"role": "user", "content": "long story"}]})


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {MASTER}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {}
    for line in head[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    routes = {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
              "slow": {"targets": [{"provider": "mock", "model": "slow-300"}]}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as c:
        yield c


async def connect(client: TestClient[Any, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.host, client.port)


async def test_chat_by_the_front_then_aiohttp_on_the_same_connection(client: TestClient[Any, Any]) -> None:
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", CHAT))
    status, headers, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    assert "server" not in headers and headers["x-relaygate-request-id"]  # the front answered
    writer.write(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and orjson.loads(body) == {"status": "ok"}
    assert "aiohttp" in headers["server"]  # handed over mid-connection
    writer.write(post("/v1/chat/completions", CHAT))  # aiohttp keeps the connection from now on
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    writer.close()


async def test_pipelined_and_byte_by_byte_requests(client: TestClient[Any, Any]) -> None:
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", CHAT, "x-relaygate-request-id: first\r\n")
                 + post("/v1/messages?beta=true", CHAT.replace(b'"mock"', b'"mock","max_tokens":10'),
                        "x-relaygate-request-id: second\r\n"))
    s1, h1, _ = await read_response(reader)
    s2, h2, b2 = await read_response(reader)
    assert (s1, h1["x-relaygate-request-id"]) == (200, "first")
    assert (s2, h2["x-relaygate-request-id"]) == (200, "second") and orjson.loads(b2)["type"] == "message"
    for byte in post("/v1/chat/completions", CHAT, "x-relaygate-request-id: slow\r\n"):
        writer.write(bytes([byte]))
        await writer.drain()
    s3, h3, _ = await read_response(reader)
    assert (s3, h3["x-relaygate-request-id"]) == (200, "slow")
    writer.close()


async def test_bodies_the_front_leaves_to_aiohttp(client: TestClient[Any, Any]) -> None:
    reader, writer = await connect(client)
    chunked = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {MASTER}\r\n"
               f"transfer-encoding: chunked\r\n\r\n{len(CHAT):x}\r\n").encode() + CHAT + b"\r\n0\r\n\r\n"
    writer.write(chunked)
    status, headers, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion" and "aiohttp" in headers["server"]
    writer.close()
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", b"", "expect: 100-continue\r\n").replace(b"content-length: 0",
                                                                                      f"content-length: {len(CHAT)}".encode()))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    writer.write(CHAT)
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    writer.close()
    reader, writer = await connect(client)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nbad header line\r\ncontent-length: 2\r\n\r\n{}")
    status, _, _ = await read_response(reader)
    assert status == 400  # aiohttp's parser refuses it, as before the front existed
    writer.close()


async def test_oversized_body_is_a_413_and_connection_close(tmp_path: Path) -> None:
    async with gateway_client(make_config({"server": {"max_body_bytes": 2048}}, tmp_path)) as c:
        reader, writer = await connect(c)
        writer.write(post("/v1/chat/completions", b"x" * 5000))
        status, headers, body = await read_response(reader)
        assert status == 413 and orjson.loads(body)["error"]["code"] == "body_too_large"
        assert headers["connection"] == "close"
        assert await reader.read() == b""
        writer.close()


async def test_connection_close_and_client_gone_mid_stream(client: TestClient[Any, Any]) -> None:
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", CHAT, "connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close" and await reader.read() == b""
    writer.close()
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", STREAM))
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head and b"text/event-stream" in head
    writer.transport.abort()  # gone mid-stream
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", STREAM))
    status, _, body = await read_response(reader)
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    writer.close()


async def test_shutdown_finishes_the_request_in_flight(client: TestClient[Any, Any]) -> None:
    reader, writer = await connect(client)
    writer.write(post("/v1/chat/completions", CHAT.replace(b'"mock"', b'"slow"')))
    await asyncio.sleep(0.1)  # the slow target (300 ms) is being called
    assert client.server.runner is not None
    site = next(s for s in client.server.runner.sites if isinstance(s, FrontSite))
    stopping = asyncio.create_task(site.stop())
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    await stopping
    assert await reader.read() == b""  # closed once it had its answer
    writer.close()


async def test_idle_and_stalled_connections_are_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relaygate.server import front

    monkeypatch.setattr(front, "KEEPALIVE_S", 0.5)
    routes = {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
              "slow": {"targets": [{"provider": "mock", "model": "slow-1500"}]}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as c:
        idle_r, idle_w = await connect(c)
        idle_w.write(post("/v1/chat/completions", CHAT))
        assert (await read_response(idle_r))[0] == 200
        stalled_r, stalled_w = await connect(c)
        stalled_w.write(post("/v1/chat/completions", CHAT)[:-5])  # the body never completes
        busy_r, busy_w = await connect(c)
        busy_w.write(post("/v1/chat/completions", CHAT.replace(b'"mock"', b'"slow"')))  # 1.5 s in flight: kept
        assert await asyncio.wait_for(idle_r.read(), 3) == b""
        assert await asyncio.wait_for(stalled_r.read(), 3) == b""
        assert (await read_response(busy_r))[0] == 200
        for w in (idle_w, stalled_w, busy_w):
            w.close()


def test_head_parsing_hands_anything_unusual_to_aiohttp() -> None:
    from relaygate.server.front import _parse_head

    base = "POST /v1/messages?beta=true HTTP/1.1\r\nHost: t\r\nX-Api-Key: k\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 12"
    parsed = _parse_head(base.encode())
    assert parsed is not None
    fmt, headers, keep_alive, length = parsed
    assert (fmt, keep_alive, length) == ("anthropic", True, 12)
    assert headers["x-api-key"] == "k" and headers["x-a"] == "1, 2"
    for bad in (base.replace("HTTP/1.1", "HTTP/1.0"), base.replace("POST", "GET"),
                base.replace("/v1/messages", "/v1/other"), base + "\r\nContent-Length: 12",
                base.replace("12", "1\u00b2"), base.replace("X-A: 1", "X A: 1"), base.replace("X-A: 1", " X-A: 1"),
                base.replace("X-A: 1", "X-A: 1\nInjected: 1"), base + "\r\nTransfer-Encoding: chunked",
                base + "\r\nExpect: 100-continue", base + "\r\nno colon"):
        assert _parse_head(bad.encode("latin-1")) is None, bad
    closing = _parse_head((base + "\r\nConnection: close").encode())
    assert closing is not None and closing[2] is False


async def test_an_unexpected_failure_is_a_500_in_the_clients_format(client: TestClient[Any, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from relaygate.server import front

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(front, "chat", broken)
    reader, writer = await connect(client)
    writer.write(post("/v1/messages", CHAT))
    status, headers, body = await read_response(reader)
    assert status == 500 and orjson.loads(body)["type"] == "error" and headers["connection"] == "close"
    assert await reader.read() == b""
    writer.close()
