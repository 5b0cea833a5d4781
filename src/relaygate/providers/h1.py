"""A lean HTTP/1.1 client for the upstream hot path: keep-alive connections pooled per
origin, the response parsed by llhttp (httptools), bodies handed over as they arrive.

Why not aiohttp's client: a gateway makes one upstream call per request, and aiohttp's
ClientSession spends more CPU on it (request and response objects, header multidicts,
cookie jar, tracing hooks, timer contexts) than the rest of a pass-through. This client
does what the gateway needs and nothing else: one write of head + body, one parser
callback per header, a dict of lower-cased headers, one timer per wait that can block.

Semantics kept from a full client: connections are reused only after a complete response
that allows keep-alive; a reused connection the server had closed while idle (it fails
before a single response byte) is retried once on a fresh connection; 1xx interim
answers are skipped; gzip/deflate bodies are decoded; a body read until close is
complete when the server closes; a reader that stops early (fallback, client gone)
closes the connection instead of pooling it; reading pauses while more than
`_HIGH_WATER` bytes of a stream wait for the consumer."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import zlib
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 1 << 20
_KEEPALIVE_S = 60.0
_DNS_TTL_S = 300.0
_MAX_IDLE_PER_ORIGIN = 4096  # as many as a burst of concurrent calls opened: no reconnect storm

Origin = tuple[str, str, int]  # scheme, host, port


class StaleConnection(ConnectionError):
    """A pooled connection failed before any response byte: the server had closed it."""


class ResponseTimeout(TimeoutError):
    pass


@functools.lru_cache(maxsize=1024)
def split_url(url: str) -> tuple[Origin, str, str]:
    """(origin, request target, Host header) of an absolute http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    netloc_host = f"[{host}]" if ":" in host else host
    host_header = netloc_host if port == default else f"{netloc_host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), target, host_header


_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def request_head(method: str, target: str, host: str, headers: dict[str, str], body_len: int) -> bytes:
    """The request line and headers; a caller's own Host wins (SigV4 signs it)."""
    lines = [f"{method} {target} HTTP/1.1"]
    own_host = None
    for name, value in headers.items():
        low = name.lower()
        if low in _FRAMING:
            if low == "host":
                own_host = value
            continue
        lines.append(f"{name}: {value}")
    lines.append(f"host: {own_host or host}")
    lines.append(f"content-length: {body_len}")
    text = "\r\n".join(lines)
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise ValueError("a header name or value contains a line break")
    return (text + "\r\n\r\n").encode()


class Connection(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None
        # The deadline's timer, armed once per deadline: a stream's reads all wait for the
        # same total deadline, and arming one per read (call_at + cancel) cost ~4 us a read
        # on the AMD VM of bench/results/tokens-2026-12-03-vs-a9d5fd2.txt
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = -1.0
        self._reset()

    def _reset(self) -> None:
        self._disarm()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.interim = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.until_close = False
        self.decoder: Any = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.complete:
            return
        if self.head_done and self.until_close and self.error is None:
            self._finish(keep_alive=False)
        elif not self.got_bytes:
            self._fail(StaleConnection("upstream closed the connection"))
        else:
            self._fail(exc or ConnectionResetError("upstream closed the connection"))

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self.interim = True
            return
        self.status = status
        self.head_done = True
        h = self.headers
        if h.get("content-encoding", "").lower() in ("gzip", "deflate", "x-gzip"):
            self.decoder = zlib.decompressobj(47)  # zlib or gzip header, detected
        self.until_close = "content-length" not in h and "chunked" not in h.get("transfer-encoding", "").lower()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            try:
                body = self.decoder.decompress(body)
            except zlib.error as exc:
                self._fail(ConnectionError(f"bad compressed body ({exc})"))
                self.close()
                return
            if not body:
                return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = {}
            return
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self.chunks.append(tail)
        self._finish(self.parser.should_keep_alive())

    # --- the caller's side

    def _finish(self, keep_alive: bool) -> None:
        self.complete = True
        self.keep_alive = keep_alive
        self._disarm()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._disarm()
        self._wake()

    def _disarm(self) -> None:
        """No more waiting in this exchange: its deadline's timer goes (a pooled or closed
        connection must neither time out later nor be held by the loop until then)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = -1.0

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _timed_out(self) -> None:
        self._fail(ResponseTimeout())

    async def _wait(self, deadline: float) -> None:
        """Until the next parser event, an error, or `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            raise ResponseTimeout()
        if self._timer_at != deadline:
            self._disarm()
            self._timer = loop.call_at(deadline, self._timed_out)
            self._timer_at = deadline
        self.waiter = loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def read_head(self, deadline: float) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(deadline)

    async def read_body(self, deadline: float) -> bytes:
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self._wait(deadline)
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        return body

    async def read_chunk(self, deadline: float) -> bytes:
        """What arrived since the last call (b"" once the body is complete)."""
        while not self.chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(deadline)
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        """Back to the pool after a complete keep-alive response; closed otherwise."""
        if self.complete and self.keep_alive and not self.lost and self.error is None and not self.paused:
            self._reset()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.lost = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Idle connections per origin, most recently used first (warm, least likely stale)."""

    def __init__(self, keepalive_s: float = _KEEPALIVE_S, dns_ttl_s: float = _DNS_TTL_S) -> None:
        self.keepalive_s = keepalive_s
        self.dns_ttl_s = dns_ttl_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}  # -> (expires, addresses)
        self._resolving: dict[tuple[str, int], asyncio.Future[list[str]]] = {}

    def take(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def connect(self, origin: Origin) -> Connection:
        """A new connection (the caller bounds the time), to the first address of the host
        that accepts it."""
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        error: OSError | None = None
        for address in await self.resolve(host, port):
            try:
                _, conn = await loop.create_connection(lambda: Connection(self, origin), address, port, ssl=tls,
                                                       server_hostname=host if tls else None)
                return conn
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses, cached for `dns_ttl_s`; one lookup at a time per host (a
        burst of new connections must not queue a getaddrinfo each on the thread pool)."""
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        key = (host, port)
        loop = asyncio.get_running_loop()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        pending = self._resolving.get(key)
        if pending is None:
            pending = self._resolving[key] = loop.create_future()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
                if not addresses:
                    raise OSError(f"no address for {host}")
                self._dns[key] = (loop.time() + self.dns_ttl_s, addresses)
                pending.set_result(addresses)
            except BaseException as exc:
                pending.set_exception(exc if isinstance(exc, OSError) else OSError(f"cannot resolve {host}"))
                pending.exception()  # retrieved: a lookup nobody else waited on logs nothing
                raise
            finally:
                del self._resolving[key]
            return addresses
        return await asyncio.shield(pending)

    def put(self, conn: Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
