"""The listening socket's protocol: chat requests served by a lean HTTP/1.1 front, every
other request handed to aiohttp.

Why: aiohttp's server spends more CPU per request (request object, router, middleware,
response object, header multidicts, writer) than a gateway's pass-through of the same
request. The data plane's two hot routes (`POST /v1/chat/completions` (and
`/chat/completions`), `POST /v1/messages`) are framed here directly; anything else, and
any request this front does not fully understand (chunked or `Expect: 100-continue`
bodies, duplicate framing headers, folded or malformed header lines, other methods,
oversized heads), hands the connection over to aiohttp at that request's first byte, so
aiohttp's own parser answers it exactly as before (admin API, health, metrics, 400s).

Per connection, requests are answered in order (pipelined requests wait in the buffer);
a connection that spends `KEEPALIVE_S` between answers (idle, or with a request that
never completes) is closed; reading pauses while a request is being served and more
than its body's worth of bytes is buffered."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from relaygate.errors import GatewayError
from relaygate.pipeline.inbound import body_too_large
from relaygate.server.app import Reply, chat, error_reply, stream_headers
from relaygate.server.streaming import StreamRelay

if TYPE_CHECKING:
    from relaygate.server.gateway import Gateway

log = logging.getLogger("relaygate.server")

KEEPALIVE_S = 75.0
MAX_HEAD = 64 * 1024
_HOT = {"/v1/chat/completions": "openai", "/chat/completions": "openai", "/v1/messages": "anthropic"}
_PREFIXES = tuple(b"POST " + path.encode() for path in _HOT)
_HANDED_OFF = {"transfer-encoding", "expect", "upgrade"}
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_date: tuple[int, str] = (0, "")


def http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
    return _date[1]


def response_head(status: int, headers: dict[str, str], length: int | None, keep_alive: bool) -> bytes:
    """Status line and headers; `length` None: a chunked body follows."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"date: {http_date()}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    lines.append("transfer-encoding: chunked" if length is None else f"content-length: {length}")
    if not keep_alive:
        lines.append("connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


class Front:
    """The listening socket's protocol factory, and its connections (for shutdown)."""

    def __init__(self, gw: Gateway, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.gw = gw
        self.fallback = fallback  # aiohttp's web.Server: builds its RequestHandler protocol
        self.connections: set[FrontProtocol] = set()
        self.max_body = gw.cfg.server.max_body_bytes
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> FrontProtocol:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return FrontProtocol(self)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S / 5)
            cutoff = time.monotonic() - KEEPALIVE_S
            for conn in [c for c in self.connections if c.idle_since is not None and c.idle_since < cutoff]:
                conn.close()

    async def shutdown(self, timeout: float) -> None:
        """After the listener closed: idle connections closed at once, requests in flight
        given `timeout` seconds to finish."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + timeout
        while True:
            await self.gw.durable()  # answers finished so far are written, not cut off
            for conn in list(self.connections):
                if conn.task is None:
                    conn.close()
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


class FrontSite(web.BaseSite):
    """An aiohttp runner's site whose connections the front serves first: `runner.cleanup()`
    stops it like any site (listener closed, requests in flight finished, connections
    closed) before aiohttp's own connections and the app's cleanup (the ledger's flush)."""

    def __init__(self, runner: web.BaseRunner, gw: Gateway, host: str | None = None, port: int = 0,
                 sock: socket.socket | None = None, reuse_port: bool = False, backlog: int = 4096,
                 shutdown_timeout: float = 60.0) -> None:
        super().__init__(runner, backlog=backlog)
        self._gw, self._host, self._port, self._sock = gw, host, port, sock
        self._reuse_port = reuse_port
        self._timeout = shutdown_timeout
        self.front: Front | None = None

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2] if self._sock else (self._host, self._port)
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        assert self._runner.server is not None
        self.front = Front(self._gw, self._runner.server)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(self.front, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(self.front, self._host, self._port, backlog=self._backlog,
                                                    reuse_port=self._reuse_port or None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.front is not None:
            await self.front.shutdown(self._timeout)
        self._runner._unreg_site(self)


class FrontProtocol(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.idle_since: float | None = time.monotonic()
        self.lost = False
        self.reading_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.front.connections.discard(self)
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._next()
        elif len(self.buf) > self.front.max_body + MAX_HEAD and not self.reading_paused:
            assert self.transport is not None
            self.reading_paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # --- framing

    def _next(self) -> None:
        """Frames the request at the head of the buffer: serve it, hand the connection
        over, or wait for more bytes."""
        buf = self.buf
        if not buf:
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD or not any(p.startswith(buf[:len(p)]) for p in _PREFIXES):
                self._hand_off()
            return
        parsed = _parse_head(bytes(buf[:end]))
        if parsed is None:
            self._hand_off()
            return
        fmt, headers, keep_alive, length = parsed
        if length > self.front.max_body:
            del buf[:end + 4]  # the body is not read: the connection closes after the answer
            self.idle_since = None
            self.task = asyncio.get_running_loop().create_task(
                self._serve(fmt, headers, body_too_large(self.front.max_body), False))
            return
        start = end + 4
        if len(buf) < start + length:
            return  # the body is still arriving
        body = bytes(buf[start:start + length])
        del buf[:start + length]
        self.idle_since = None
        self.task = asyncio.get_running_loop().create_task(self._serve(fmt, headers, body, keep_alive))

    def _hand_off(self) -> None:
        """aiohttp takes over this connection from the current request's first byte."""
        assert self.transport is not None
        self.front.connections.discard(self)
        proto = self.front.fallback()
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        data, self.buf = bytes(self.buf), bytearray()
        if self.reading_paused:
            self.transport.resume_reading()
        if data:
            proto.data_received(data)

    async def _serve(self, fmt: str, headers: dict[str, str], body: Any, keep_alive: bool) -> None:
        gw = self.front.gw
        writer: ChunkedWriter | None = None
        try:
            out = await chat(gw, fmt, headers, body)
            if isinstance(out, Reply):
                self._reply(out, keep_alive)
            else:  # the head leaves with the first events
                writer = ChunkedWriter(self, response_head(200, stream_headers(out), None, keep_alive))
                await StreamRelay(gw, out, writer).run()
        except Exception:
            log.exception("front: request failed")
            keep_alive = False
            if writer is None or writer.head:  # nothing of the answer left yet: a 500 in the client's format
                self._reply(error_reply(fmt, GatewayError(500, "internal error", "api_error", "internal_error"),
                                        {}), False)
        finally:
            self.task = None
        if not keep_alive or self.lost:
            gw.after_durable(self.close)  # after the answer's own deferred write
            return
        self.idle_since = time.monotonic()
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        self._next()

    def _reply(self, reply: Reply, keep_alive: bool) -> None:
        hdrs = {"content-type": reply.content_type, **reply.headers}
        data = response_head(reply.status, hdrs, len(reply.body), keep_alive) + reply.body
        self.front.gw.after_durable(lambda: self._write(data))  # its usage record is on disk first

    def _write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.lost:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


class ChunkedWriter:
    """What StreamRelay writes to (the part of aiohttp's StreamResponse it uses): the
    response head goes out with the first body bytes, the last bytes with the end."""

    __slots__ = ("conn", "head")

    def __init__(self, conn: FrontProtocol, head: bytes) -> None:
        self.conn = conn
        self.head = head

    async def write(self, data: bytes) -> None:
        conn = self.conn
        if conn.lost or conn.transport is None or conn.transport.is_closing():
            raise ConnectionResetError("client disconnected")
        head, self.head = self.head, b""
        conn.transport.write(b"%b%x\r\n%b\r\n" % (head, len(data), data))
        await conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        head, self.head = self.head, b""
        body = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        last = head + body + b"0\r\n\r\n"
        self.conn.front.gw.after_durable(lambda: self.conn._write(last))  # after the usage record


def _parse_head(head: bytes) -> tuple[str, dict[str, str], bool, int] | None:
    """(format, lower-cased headers, keep-alive, body length) of a hot-route request head;
    None for anything aiohttp should answer. One decode and one split for the whole head
    (a per-line bytes loop cost 3x more with the SDKs' ~17 headers)."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        return None  # a stray CR or LF: aiohttp rejects it properly
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    if method != "POST" or version != "HTTP/1.1":  # HTTP/1.0 (no chunked answers): aiohttp's
        return None
    fmt = _HOT.get(target.partition("?")[0])
    if fmt is None:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.lower()
        if not sep or not name or " " in name or "\t" in name or key in _HANDED_OFF:
            return None  # folded or malformed lines, bodies framed otherwise, upgrades
        value = value.strip(" \t")
        if key in headers:
            if key == "content-length":
                return None
            headers[key] += ", " + value
        else:
            headers[key] = value
    length = headers.get("content-length", "0")
    if not (length.isascii() and length.isdigit()):
        return None
    keep_alive = "close" not in headers.get("connection", "").lower()
    return fmt, headers, keep_alive, int(length)
