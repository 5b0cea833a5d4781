"""The lean HTTP/1.1 upstream client against a raw asyncio server that writes exact bytes:
keep-alive reuse, chunked and gzip bodies, interim 1xx answers, bodies read until close,
a pooled connection the server closed while idle, early release, malformed answers."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from relaygate.errors import UpstreamError
from relaygate.providers.base import UpstreamRequest
from relaygate.providers.h1 import request_head, split_url
from relaygate.providers.http import Deadlines, HttpTransport

DEADLINES = Deadlines(connect_s=1.0, first_byte_s=1.0, total_s=2.0)
Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # False: close the connection


def fixed(raw: bytes) -> Reply:
    async def reply(_: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(raw)
        await w.drain()
        return b"connection: close" not in raw.lower()
    return reply


@dataclass
class RawServer:
    url: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    replies: dict[str, Reply] = field(default_factory=dict)
    # answer only the first request of a connection, then close when the next one arrives
    one_per_connection: bool = False


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    state = RawServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        served = 0
        try:
            while (request := await _read_request(reader)) is not None:
                if state.one_per_connection and served:
                    break  # the idle-timeout race: the request arrives, the server hangs up
                state.requests.append(request)
                served += 1
                path = request.split(b" ", 2)[1].decode()
                if not await state.replies[path](request, writer):
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield state
    server.close()


@pytest.fixture
async def t() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.close()


def post(url: str, stream: bool = False, headers: dict[str, str] | None = None) -> UpstreamRequest:
    return UpstreamRequest("POST", url, headers or {"content-type": "application/json"}, b'{"q": 1}', stream)


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\": 1}\r\n"


async def test_keep_alive_reuses_one_connection(raw: RawServer, t: HttpTransport) -> None:
    raw.replies["/ok"] = fixed(OK)
    for _ in range(5):
        resp = await t.send(post(raw.url + "/ok"), DEADLINES)
        assert resp.status == 200 and resp.body == b'{"ok": 1}\r\n'
        assert resp.headers["content-type"] == "application/json"
    assert raw.connections == 1
    head = raw.requests[0]
    assert head.startswith(b"POST /ok HTTP/1.1\r\n")
    assert f"host: {raw.url.removeprefix('http://')}".encode() in head
    assert b"content-length: 8\r\n" in head and head.endswith(b'\r\n\r\n{"q": 1}')


async def test_chunked_gzip_and_interim_answers(raw: RawServer, t: HttpTransport) -> None:
    payload = gzip.compress(b'{"text": "' + b"x" * 5000 + b'"}')
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 700]), payload[i:i + 700])
                       for i in range(0, len(payload), 700)) + b"0\r\n\r\n"
    raw.replies["/gz"] = fixed(b"HTTP/1.1 100 Continue\r\n\r\n"
                               b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n"
                               b"X-Twice: a\r\nx-twice: b\r\n\r\n" + chunked)
    resp = await t.send(post(raw.url + "/gz"), DEADLINES)
    assert resp.status == 200 and resp.body == b'{"text": "' + b"x" * 5000 + b'"}'
    assert resp.headers["x-twice"] == "a, b"
    again = await t.send(post(raw.url + "/gz"), DEADLINES)
    assert again.body == resp.body and raw.connections == 1


async def test_body_until_close_is_complete_and_not_reused(raw: RawServer, t: HttpTransport) -> None:
    raw.replies["/eof"] = fixed(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
    assert (await t.send(post(raw.url + "/eof"), DEADLINES)).body == b"all of it"
    assert (await t.send(post(raw.url + "/eof"), DEADLINES)).body == b"all of it"
    assert raw.connections == 2


async def test_pooled_connection_closed_by_the_server_is_retried_once(raw: RawServer, t: HttpTransport) -> None:
    raw.replies["/ok"] = fixed(OK)
    raw.one_per_connection = True
    for _ in range(3):
        assert (await t.send(post(raw.url + "/ok"), DEADLINES)).status == 200
    # each later call: its pooled connection hangs up, the retry's fresh one answers (and
    # is the next call's pooled one)
    assert raw.connections == 3
    assert len(raw.requests) == 3  # no request was answered twice


async def test_fresh_connection_closed_without_an_answer_is_a_502(raw: RawServer, t: HttpTransport) -> None:
    async def hang_up(_: bytes, w: asyncio.StreamWriter) -> bool:
        return False
    raw.replies["/bye"] = hang_up
    with pytest.raises(UpstreamError) as err:
        await t.send(post(raw.url + "/bye"), DEADLINES)
    assert err.value.status == 502 and "without answering" in err.value.message
    assert raw.connections == 1  # not retried: the server may have acted on it


def sse_events(n: int) -> Reply:
    """A chunked event stream of `n` events, 10 ms apart, each in its own write."""
    async def events(_: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(n):
            data = b"data: %d\n\n" % i
            w.write(b"%x\r\n%s\r\n" % (len(data), data))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True
    return events


async def test_stream_released_early_closes_its_connection(raw: RawServer, t: HttpTransport) -> None:
    raw.replies["/sse"] = sse_events(3)
    resp = await t.send(post(raw.url + "/sse", stream=True), DEADLINES)
    assert resp.chunks is not None
    got = b"".join([c async for c in resp.chunks])
    assert got == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    resp.release()
    resp.release()  # a second release is harmless
    early = await t.send(post(raw.url + "/sse", stream=True), DEADLINES)
    assert early.chunks is not None
    assert await early.chunks.__anext__() == b"data: 0\n\n"
    early.release()  # abandoned mid-body: its connection cannot be reused
    assert (await t.send(post(raw.url + "/sse"), DEADLINES)).body.startswith(b"data: 0")
    assert raw.connections == 2


async def test_malformed_answer_and_header_injection_are_502s(raw: RawServer, t: HttpTransport) -> None:
    raw.replies["/junk"] = fixed(b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(UpstreamError) as junk:
        await t.send(post(raw.url + "/junk"), DEADLINES)
    assert junk.value.status == 502
    with pytest.raises(UpstreamError) as bad:
        await t.send(post(raw.url + "/ok", headers={"x-a": "1\r\nx-injected: 1"}), DEADLINES)
    assert bad.value.status == 502 and "line break" in bad.value.message
    assert not any(b"x-injected" in r for r in raw.requests)


def test_url_split_and_request_head() -> None:
    assert split_url("https://api.example.com/v1/x?a=1") == (("https", "api.example.com", 443), "/v1/x?a=1",
                                                             "api.example.com")
    assert split_url("http://[::1]:8080") == (("http", "::1", 8080), "/", "[::1]:8080")
    with pytest.raises(ValueError):
        split_url("ftp://x/y")
    head = request_head("POST", "/p", "h:1", {"Host": "signed.example", "Content-Length": "99", "a": "b"}, 3)
    assert head == b"POST /p HTTP/1.1\r\na: b\r\nhost: signed.example\r\ncontent-length: 3\r\n\r\n"


async def test_host_names_resolved_once_for_a_burst(raw: RawServer, t: HttpTransport,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    raw.replies["/ok"] = fixed(OK)
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    lookups: list[str] = []

    async def counting(host: str, *args: object, **kwargs: object) -> object:
        lookups.append(host)
        await asyncio.sleep(0.05)  # a slow resolver: the burst piles up behind one lookup
        return await real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    url = raw.url.replace("127.0.0.1", "localhost") + "/ok"  # ::1 may come first: refused, then 127.0.0.1
    answers = await asyncio.gather(*(t.send(post(url), DEADLINES) for _ in range(20)))
    assert [a.status for a in answers] == [200] * 20
    assert lookups == ["localhost"]
    head = raw.requests[0]
    assert f"host: localhost:{raw.url.rsplit(':', 1)[1]}".encode() in head


async def test_one_timer_per_deadline_and_none_left_after_the_exchange(raw: RawServer, t: HttpTransport,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream's reads all wait for its total deadline: one timer for it, not one per read;
    a finished exchange leaves no timer behind (its pooled connection is reused after that
    deadline has passed), and a stream that stalls still ends at the total deadline."""
    async def stall(_: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                b"9\r\ndata: 0\n\n\r\n")
        await w.drain()
        await asyncio.sleep(5)
        return False

    raw.replies["/sse"] = sse_events(8)
    raw.replies["/ok"] = fixed(OK)
    raw.replies["/stall"] = stall
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") == "_timed_out":  # the client's deadlines only
            armed.append(when)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    short = Deadlines(connect_s=1.0, first_byte_s=0.3, total_s=0.4)
    resp = await t.send(post(raw.url + "/sse", stream=True), short)
    assert resp.chunks is not None
    got = [c async for c in resp.chunks]
    resp.release()
    assert b"".join(got) == b"".join(b"data: %d\n\n" % i for i in range(8)) and len(got) >= 4
    # the head's, the first chunk's (first-byte bound) and the total deadline's: not one per read
    assert len(armed) <= 3 and len(set(armed)) == len(armed)
    await asyncio.sleep(0.5)  # past every deadline of that exchange
    assert (await t.send(post(raw.url + "/ok"), short)).status == 200
    assert raw.connections == 1  # the pooled connection, reused, did not time out
    stalled = await t.send(post(raw.url + "/stall", stream=True), short)
    assert stalled.chunks is not None
    started = loop.time()
    assert await stalled.chunks.__anext__() == b"data: 0\n\n"
    with pytest.raises(UpstreamError) as err:
        await stalled.chunks.__anext__()
    assert err.value.status == 504 and loop.time() - started < 1.0
