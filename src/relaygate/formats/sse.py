"""Incremental Server-Sent Events parsing (one parser for every SSE-speaking provider)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEParser:
    """Feeds raw bytes, yields complete events; tolerant of CRLF and split chunks."""

    __slots__ = ("_buf", "_event", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()  # the incomplete last line (b"" when the chunk ended a line)
        out: list[SSEEvent] = []
        for raw in lines:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw:
                if self._data or self._event:
                    out.append(SSEEvent(self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if raw[0] == 0x3A:  # ":" a comment
                continue
            name, _, value = raw.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        return out

    def close(self) -> list[SSEEvent]:
        """Flushes a final event that lacked its blank line (some servers do that)."""
        rest = self.feed(b"\n\n") if self._buf else []
        if self._data:
            rest.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return rest


def sse_line(data: bytes, event: str | None = None) -> bytes:
    if event:
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
