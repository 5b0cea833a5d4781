"""Stable JSON for tool results: the same facts give the same bytes.

Volatile fields (timestamps, request ids, timings) are dropped at any depth and keys are
sorted, so a repeated tool call can be recognised, deduplicated and cached. The gateway's
exact cache uses the same function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson

_NORMALISE = re.compile(r"[^a-z0-9]")

VOLATILE_KEYS: frozenset[str] = frozenset(
    _NORMALISE.sub("", key)
    for key in (
        "timestamp", "ts", "time", "datetime", "date", "now",
        "created", "created_at", "updated", "updated_at", "modified", "modified_at",
        "fetched_at", "generated_at", "retrieved_at", "expires", "expires_at", "last_modified",
        "request_id", "x_request_id", "req_id", "trace_id", "span_id", "correlation_id",
        "traceparent", "cf_ray", "etag",
        "duration", "duration_ms", "duration_s", "elapsed", "elapsed_ms", "elapsed_s",
        "latency", "latency_ms", "took", "took_ms", "timing", "timings",
        "response_time", "response_time_ms", "execution_time", "execution_time_ms",
        "processing_time", "processing_time_ms", "server_timing",
    )
)
"""Key names (compared lower-case, without `_`/`-`) that are dropped by default."""


@lru_cache(maxsize=4096)
def _normal(key: str) -> str:
    return _NORMALISE.sub("", key.lower())


def _strip(value: Any, drop: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _strip(item, drop) for key, item in value.items() if _normal(str(key)) not in drop}
    if isinstance(value, (list, tuple)):
        return [_strip(item, drop) for item in value]
    return value


def canonicalize_tool_result(result: Any, *, drop_keys: Iterable[str] | None = None) -> str:
    """Canonical JSON text of a tool result.

    `result` may be any JSON-like value, or a string holding JSON (parsed first); a string that
    is not JSON is returned unchanged. `drop_keys` replaces the default `VOLATILE_KEYS`.
    """
    drop = VOLATILE_KEYS if drop_keys is None else frozenset(_NORMALISE.sub("", k.lower()) for k in drop_keys)
    if isinstance(result, (str, bytes)):
        try:
            result = orjson.loads(result)
        except orjson.JSONDecodeError:
            return result if isinstance(result, str) else result.decode("utf-8", "replace")
    stripped = _strip(result, drop)
    return orjson.dumps(stripped, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
