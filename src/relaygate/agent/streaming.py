"""Switch an agent loop from streaming to non-streaming after a streaming overload.

Providers sometimes fail streams under load (HTTP 529 / `overloaded_error`, or a stream that
breaks half-way) while plain requests still succeed. `StreamingFallback.run` tries the
streaming call; on such a failure it tells the user once, and this call and every later one
go through the non-streaming call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
Notify = Callable[[str], Awaitable[None] | None]

NOTICE = "The model service is overloaded for streaming; continuing without live streaming (replies arrive whole)."

_STREAM_ERROR_NAMES = frozenset({
    "RemoteProtocolError", "ReadError", "ReadTimeout", "IncompleteRead", "ClientPayloadError",
    "ServerDisconnectedError", "ChunkedEncodingError", "APIConnectionError",
})


def is_streaming_overload(error: BaseException) -> bool:
    """True for an overload (status 529, `overloaded` type or message, 503 with overloaded)
    or a broken stream; false for errors a non-streaming retry would not fix (4xx, auth)."""
    status = getattr(error, "status_code", None) or getattr(error, "status", None)
    if status == 529:
        return True
    body = getattr(error, "body", None)
    kind = ""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            kind = str(inner.get("type", ""))
    text = f"{kind} {error}".lower()
    if "overloaded" in text or "during streaming" in text:
        return True
    if isinstance(status, int) and status < 500:
        return False
    return any(cls.__name__ in _STREAM_ERROR_NAMES for cls in type(error).__mro__)


class StreamingFallback:
    """Streaming until the first streaming overload, non-streaming from then on."""

    def __init__(self, notify: Notify | None = None, *, notice: str = NOTICE) -> None:
        self.streaming = True
        self.notice = notice
        self._notify = notify
        self._told = False
        self.last_error: BaseException | None = None

    async def run(self, stream: Callable[[], Awaitable[T]], once: Callable[[], Awaitable[T]]) -> T:
        """`stream()` while streaming works; `once()` after it failed with an overload.
        Any other error propagates unchanged."""
        if self.streaming:
            try:
                return await stream()
            except Exception as error:
                if not is_streaming_overload(error):
                    raise
                self.streaming = False
                self.last_error = error
                await self._tell()
        return await once()

    async def _tell(self) -> None:
        if self._told or self._notify is None:
            self._told = True
            return
        self._told = True
        outcome: Any = self._notify(self.notice)
        if inspect.isawaitable(outcome):
            await outcome
