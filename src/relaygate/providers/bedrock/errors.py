"""Bedrock's errors: the exception name (header `x-amzn-ErrorType`, body `__type`, or an
event-stream `:exception-type`) decides the status, so retry and fallback treat a
throttled or overloaded Bedrock exactly like a throttled or overloaded Anthropic."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from relaygate.errors import UpstreamError
from relaygate.observability.scrub import scrub
from relaygate.providers.base import retry_after_seconds

# Bedrock's own statuses differ in places (ModelNotReady is sent as 429, ModelTimeout as
# 408, ModelError as 424, ServiceQuotaExceeded as 400); these are the ones our fallback
# rules understand.
EXCEPTION_STATUS: dict[str, int] = {
    "ThrottlingException": 429,
    "ServiceQuotaExceededException": 429,
    "TooManyRequestsException": 429,
    "ServiceUnavailableException": 503,
    "ModelNotReadyException": 503,
    "ModelTimeoutException": 504,
    "InternalServerException": 500,
    "ModelErrorException": 502,
    "ModelStreamErrorException": 502,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 401,
    "ExpiredTokenException": 401,
    "ResourceNotFoundException": 404,
}
_BY_LOWER = {name.lower(): status for name, status in EXCEPTION_STATUS.items()}


def exception_name(raw: str | None) -> str | None:
    """`ThrottlingException:http://internal...` or `com.amazon...#ThrottlingException` -> the name."""
    if not raw:
        return None
    name = raw.split(":", 1)[0]
    return name.rsplit("#", 1)[-1].strip() or None


def status_of(name: str | None, default: int) -> int:
    return _BY_LOWER.get((name or "").lower(), default)


def bedrock_error(provider: str, status: int, headers: Mapping[str, str], body: bytes,
                  secrets: list[str]) -> UpstreamError:
    message: str | None = None
    name = exception_name(headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype"))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        message = data.get("message") or data.get("Message")
        name = name or exception_name(data.get("__type") or data.get("code"))
    if not message:
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    label = f"{name}: {message}" if name else str(message)
    return UpstreamError(status_of(name, status), scrub(f"{provider}: {label}", secrets),
                         retry_after_seconds(headers), name)


def stream_exception(provider: str, name: str | None, payload: bytes, secrets: list[str]) -> UpstreamError:
    """An `exception` (or `error`) message inside an event stream."""
    message = None
    try:
        data = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        message = data.get("message") or data.get("Message")
    text = f"{name or 'stream error'}: {message or payload[:200].decode('utf-8', 'replace') or 'no details'}"
    # An exception mid-stream is the upstream breaking, not the client's request: never 4xx.
    status = status_of(name, 502)
    if status < 500 and status != 429:
        status = 502
    return UpstreamError(status, scrub(f"{provider}: {text}", secrets), None, name)
