"""Stable JSON for tool results: the same facts give the same bytes.

Volatile fields (timestamps, request ids, timings) are dropped at any depth and keys are
sorted, so a repeated tool call can be recognised, deduplicated and cached. The gateway's
exact cache and its prompt-cache breakpoints use the same functions.
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
        # when the call ran, not what it found ("created_at" or "date" can be facts: kept)
        "timestamp", "ts", "server_time", "response_time", "fetched_at", "retrieved_at", "generated_at",
        # which call it was
        "request_id", "x_request_id", "trace_id", "span_id", "traceparent", "correlation_id", "cf_ray",
        # how long it took
        "execution_time", "execution_time_ms", "elapsed_ms", "elapsed_time", "duration_ms", "latency_ms",
        "took", "took_ms", "runtime_ms", "timing_ms", "timings", "server_timing",
    )
)
"""Key names (compared lower-case, without `_`/`-`) that are dropped by default."""


@lru_cache(maxsize=4096)
def _normal(key: str) -> str:
    return _NORMALISE.sub("", key.lower())


def strip_volatile(value: Any, drop: frozenset[str] = VOLATILE_KEYS) -> Any:
    """`value` without the `drop` keys at any depth (keys compared by `_normal`)."""
    if isinstance(value, Mapping):
        return {str(key): strip_volatile(item, drop) for key, item in value.items()
                if _normal(str(key)) not in drop}
    if isinstance(value, (list, tuple)):
        return [strip_volatile(item, drop) for item in value]
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
    stripped = strip_volatile(result, drop)
    return orjson.dumps(stripped, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
