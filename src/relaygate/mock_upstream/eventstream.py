"""Encoder for AWS's binary event-stream framing (`application/vnd.amazon.eventstream`).

botocore ships only the parser (`botocore.eventstream`); this writes what it reads:
a message is [total length u32][headers length u32][prelude CRC32] [headers] [payload]
[message CRC32], big-endian, CRCs over everything before them. Headers here are all
strings (type 7): [name length u8][name][7][value length u16][value].
"""

from __future__ import annotations

import struct
import zlib

_STRING_HEADER = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message."""
    header_bytes = b"".join(_encode_header(name, value) for name, value in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, payload: bytes) -> bytes:
    """An `event` message carrying a JSON payload, as Bedrock's streams send them."""
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, payload
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """An `exception` message (e.g. `throttlingException`) ending a stream with an error."""
    return encode_message(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        payload,
    )


def _encode_header(name: str, value: str) -> bytes:
    raw_name = name.encode()
    raw_value = value.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING_HEADER, len(raw_value)) + raw_value
