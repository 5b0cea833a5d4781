"""Errors as values: what went wrong, with the status and type a client acts on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class GatewayError(Exception):
    """An error answered to the client in its own format's envelope.

    `type` follows OpenAI's vocabulary (`invalid_request_error`, `authentication_error`,
    `permission_error`, `not_found_error`, `rate_limit_exceeded`, `budget_exceeded`,
    `api_error`, `upstream_error`); the Anthropic encoder maps it onto Anthropic's.
    """

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_request", param)


@dataclass(slots=True)
class UpstreamError(Exception):
    """A failed upstream attempt, already scrubbed of secrets. Connect errors are 502,
    timeouts 504, so one list of status codes drives retry and fallback."""

    status: int
    message: str
    retry_after: float | None = None
    error_type: str | None = None

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"
