"""The one shared upstream HTTP client: a keep-alive HTTP/1.1 pool (relaygate.providers.h1),
deadlines per phase, and the mapping of connect errors to 502 and timeouts to 504 (so
retry/fallback treat them as statuses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from relaygate.config.models import TimeoutsConfig
from relaygate.errors import UpstreamError
from relaygate.providers import h1
from relaygate.providers.base import UpstreamRequest


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    release: Callable[[], None] = lambda: None


@dataclass(frozen=True, slots=True)
class Deadlines:
    connect_s: float
    first_byte_s: float
    total_s: float

    @classmethod
    def from_config(cls, t: TimeoutsConfig) -> Deadlines:
        return cls(t.connect_ms / 1000, t.first_byte_ms / 1000, t.total_ms / 1000)


class Transport(Protocol):
    async def send(self, req: UpstreamRequest, deadlines: Deadlines) -> UpstreamResponse: ...


class HttpTransport:
    """The HTTP/1.1 keep-alive pool shared by every provider (relaygate.providers.h1)."""

    def __init__(self) -> None:
        self._pool = h1.Pool()

    async def close(self) -> None:
        self._pool.close()

    async def send(self, req: UpstreamRequest, deadlines: Deadlines) -> UpstreamResponse:
        if req.sign is not None:
            req = req.sign(req)
        try:
            origin, target, host = h1.split_url(req.url)
            data = h1.request_head(req.method, target, host, req.headers, len(req.body)) + req.body
        except ValueError as exc:
            raise UpstreamError(502, f"bad upstream request: {exc}") from None
        loop = asyncio.get_running_loop()
        started = loop.time()
        head_by = started + min(deadlines.first_byte_s, deadlines.total_s)
        total_by = started + deadlines.total_s
        conn = self._pool.take(origin)
        # a pooled connection the server closed while it sat idle: once more on a new one
        retry = conn is not None
        while True:
            if conn is None:
                conn = await self._open(origin, deadlines, head_by)
            try:
                conn.send(data)
                await conn.read_head(head_by)
                break
            except h1.StaleConnection:
                conn.close()
                if not retry:
                    raise UpstreamError(502, "upstream closed the connection without answering") from None
                retry, conn = False, None
            except BaseException as exc:
                raise _failure(conn, exc, reading=False) from None
        if conn.status < 400 and req.stream:
            chunks = _Chunks(conn, started, deadlines)
            return UpstreamResponse(conn.status, conn.headers, b"", chunks, chunks.release)
        try:
            body = await conn.read_body(total_by)
        except BaseException as exc:
            raise _failure(conn, exc, reading=True) from None
        status, headers = conn.status, conn.headers
        conn.release()
        return UpstreamResponse(status, headers, body)

    async def _open(self, origin: h1.Origin, deadlines: Deadlines, head_by: float) -> h1.Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(head_by, loop.time() + deadlines.connect_s)):
                return await self._pool.connect(origin)
        except TimeoutError:
            raise UpstreamError(504, "upstream timed out before answering") from None
        except OSError as exc:
            raise UpstreamError(502, f"cannot connect to upstream ({exc.strerror or type(exc).__name__})") from None


def _failure(conn: h1.Connection, exc: BaseException, reading: bool) -> BaseException:
    """The UpstreamError for a failed exchange (the connection is closed: unusable)."""
    conn.close()
    if isinstance(exc, TimeoutError):
        if reading:
            return UpstreamError(504, "upstream timed out while sending its answer")
        return UpstreamError(504, "upstream timed out before answering")
    if isinstance(exc, OSError):
        if reading:
            return UpstreamError(502, "upstream connection broke while sending its answer")
        return UpstreamError(502, f"upstream connection failed ({type(exc).__name__})")
    return exc  # cancellation and the like: as they are


class _Chunks:
    """A streamed body as it arrives; a stall past the first-byte deadline or the total
    deadline is a 504, a broken connection a 502."""

    __slots__ = ("conn", "total_by", "first_s", "first", "released")

    def __init__(self, conn: h1.Connection, started: float, deadlines: Deadlines) -> None:
        self.conn = conn
        self.total_by = started + deadlines.total_s
        self.first_s = deadlines.first_byte_s
        self.first = True
        self.released = False

    def release(self) -> None:
        """The connection back to the pool when the body was read to its end, else closed;
        once per exchange, whoever calls it first."""
        if not self.released:
            self.released = True
            self.conn.release()

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        conn = self.conn
        deadline = self.total_by
        if self.first:
            deadline = min(deadline, asyncio.get_running_loop().time() + self.first_s)
        try:
            chunk = await conn.read_chunk(deadline)
        except TimeoutError:
            conn.close()
            if asyncio.get_running_loop().time() >= self.total_by:
                raise UpstreamError(504, "upstream stream exceeded the total timeout") from None
            raise UpstreamError(504, "upstream stream stalled") from None
        except OSError:
            conn.close()
            raise UpstreamError(502, "upstream stream connection broke") from None
        if not chunk:
            self.release()
            raise StopAsyncIteration
        self.first = False
        return chunk
