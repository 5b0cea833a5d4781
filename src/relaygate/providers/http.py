"""The one shared upstream HTTP client: a keep-alive aiohttp pool, deadlines, and the
mapping of connect errors to 502 and timeouts to 504 (so retry/fallback treat them as
statuses)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from relaygate.config.models import TimeoutsConfig
from relaygate.errors import UpstreamError
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
    """aiohttp client session shared by every provider; created on first use inside the
    running loop, closed by `close()`."""

    def __init__(self, limit_per_host: int = 0) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._limit_per_host = limit_per_host

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._limit_per_host, keepalive_timeout=60, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",),
                json_serialize=None,  # type: ignore[arg-type]
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, req: UpstreamRequest, deadlines: Deadlines) -> UpstreamResponse:
        if req.sign is not None:
            req = req.sign(req)
        session = self._client()
        started = time.monotonic()
        timeout = _connect_timeout(deadlines.connect_s)
        reading = False  # False: waiting for the answer's head; True: reading a whole body
        try:
            # One deadline for both phases: first byte, then moved to the total for the body.
            async with asyncio.timeout(min(deadlines.first_byte_s, deadlines.total_s)) as deadline:
                resp = await session.request(req.method, req.url, data=req.body, headers=req.headers,
                                             timeout=timeout, allow_redirects=False)
                if resp.status < 400 and req.stream:
                    return UpstreamResponse(resp.status, resp.headers, b"", _chunks(resp, started, deadlines),
                                            resp.close)
                reading = True
                remaining = deadlines.total_s - (time.monotonic() - started)
                deadline.reschedule(asyncio.get_running_loop().time() + max(0.001, remaining))
                body = await resp.read()
        except TimeoutError:
            if reading:
                resp.close()
                raise UpstreamError(504, "upstream timed out while sending its answer") from None
            raise UpstreamError(504, "upstream timed out before answering") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(502, f"cannot connect to upstream ({exc.os_error.strerror or 'refused'})") from None
        except (aiohttp.ClientError, OSError) as exc:
            if reading:
                resp.close()
                raise UpstreamError(502, "upstream connection broke while sending its answer") from None
            raise UpstreamError(502, f"upstream connection failed ({type(exc).__name__})") from None
        resp.release()
        return UpstreamResponse(resp.status, resp.headers, body)


@functools.lru_cache(maxsize=64)
def _connect_timeout(connect_s: float) -> aiohttp.ClientTimeout:
    """aiohttp's own timeout covers only connecting (the rest is ours), one object per value."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s, connect=connect_s)


async def _chunks(resp: aiohttp.ClientResponse, started: float, deadlines: Deadlines) -> AsyncIterator[bytes]:
    """The body as it arrives; a stall past the first-byte deadline or the total deadline
    is a 504, a broken connection a 502."""
    first = True
    try:
        while True:
            remaining = deadlines.total_s - (time.monotonic() - started)
            wait = min(remaining, deadlines.first_byte_s) if first else remaining
            if wait <= 0:
                raise UpstreamError(504, "upstream stream exceeded the total timeout")
            try:
                async with asyncio.timeout(wait):
                    chunk = await resp.content.readany()
            except TimeoutError:
                raise UpstreamError(504, "upstream stream stalled") from None
            except (aiohttp.ClientError, OSError):
                raise UpstreamError(502, "upstream stream connection broke") from None
            if not chunk:
                return
            first = False
            yield chunk
    finally:
        resp.release()
