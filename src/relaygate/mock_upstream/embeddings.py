"""Deterministic embedding vectors: the same text always maps to the same unit vector."""

from __future__ import annotations

import base64
import hashlib
import math
import struct

DEFAULT_DIMENSIONS = 8


def embedding_vector(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit-length vector of `dimensions` floats derived from a hash of `text`."""
    raw = hashlib.shake_256(text.encode()).digest(dimensions * 4)
    ints = struct.unpack(f"<{dimensions}I", raw)
    values = [(i / 2147483647.5) - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round-trip through float32 so the float and base64 encodings carry the same numbers.
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def vector_base64(values: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
