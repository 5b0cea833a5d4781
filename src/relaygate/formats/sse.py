"""Incremental Server-Sent Events parsing (one parser for every SSE-speaking provider)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEParser:
    """Feeds raw bytes, returns complete events; tolerant of CRLF and of chunks split
    anywhere (a partial event waits in the buffer for its blank line)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def _blocks(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:  # CRLF: normalised, a trailing CR kept for the LF still to come
            buf = buf[:-1].replace(b"\r\n", b"\n") + b"\r" if buf.endswith(b"\r") else buf.replace(b"\r\n", b"\n")
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()  # the event not yet ended by its blank line
        return blocks

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """The data of each complete event, as bytes, for formats that name no events
        (OpenAI's): no event objects, no decoding; events without data are skipped."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:  # CRLF lines: the general path normalises them
            return self._data(self._blocks(chunk))
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        done, self._buf = buf[:end], buf[end + 2:]
        if done.startswith(b"data: "):
            # the common case, every event one `data: ` line: one split, no loop
            parts = done[6:].split(b"\n\ndata: ")
            if done.count(b"\n") == 2 * len(parts) - 2:
                return parts
        return self._data(done.split(b"\n\n"))

    @staticmethod
    def _data(blocks: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                out.append(block[6:])
                continue
            event = _event(block)
            if event is not None and event.data:
                out.append(event.data.encode())
        return out

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for block in self._blocks(chunk):
            if block.startswith(b"data: ") and b"\n" not in block:  # the common one-line event
                out.append(SSEEvent(None, block[6:].decode("utf-8", "replace")))
                continue
            event = _event(block)
            if event is not None:
                out.append(event)
        return out

    def close(self) -> list[SSEEvent]:
        """Flushes a final event that lacked its blank line (some servers do that)."""
        rest, self._buf = self._buf.rstrip(b"\r"), b""
        event = _event(rest) if rest else None
        return [event] if event is not None else []


def _event(block: bytes) -> SSEEvent | None:
    """One event's lines (`event:`, `data:` lines joined by newlines, `:` comments)."""
    name_of: str | None = None
    data: list[str] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # blank, or a ":" comment
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            name_of = value.decode("utf-8", "replace")
    if not data and name_of is None:
        return None
    return SSEEvent(name_of, "\n".join(data))


def sse_line(data: bytes, event: str | None = None) -> bytes:
    if event:
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
