"""What a provider adapter is: request in, request out; response or stream bytes in,
normalised values out. No sockets here: `providers/http.py` does the I/O."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.errors import UpstreamError
from relaygate.formats.types import ChatRequest, ChatResponse, StreamEvent
from relaygate.observability.scrub import scrub

InboundFormat = str  # "openai" | "anthropic"


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool = False
    # Signed requests (SigV4) are signed by the transport just before sending.
    sign: Any = None


@dataclass(slots=True)
class EmbeddingsResult:
    vectors: list[list[float]]
    input_tokens: int
    model: str


class StreamDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]: ...


@dataclass(slots=True)
class ChatCall:
    """One attempt's input: the common request, the target's model and params, and the
    inbound body when the adapter speaks the inbound format (so it can pass it through)."""

    request: ChatRequest
    model: str
    override_params: dict[str, Any] = field(default_factory=dict)
    native_body: dict[str, Any] | None = None


@dataclass(slots=True)
class EmbeddingsCall:
    """One embeddings attempt: texts (or token arrays, for OpenAI-format upstreams) in order."""

    inputs: list[str | list[int]]
    model: str
    dimensions: int | None = None
    user: str | None = None
    override_params: dict[str, Any] = field(default_factory=dict)


class ProviderAdapter(Protocol):
    """Translation for one provider account (its config is bound at construction)."""

    native_format: InboundFormat | None

    def chat_request(self, call: ChatCall) -> UpstreamRequest: ...

    def parse_chat(self, body: bytes) -> ChatResponse: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError: ...

    def secrets(self) -> list[str]: ...


@runtime_checkable
class EmbeddingsAdapter(Protocol):
    """Optional capability of an adapter: embeddings. `embeddings_request` may split the
    inputs over several upstream calls (e.g. one text per call); their parsed results are
    concatenated in order."""

    def embeddings_request(self, call: EmbeddingsCall) -> list[UpstreamRequest]: ...

    def parse_embeddings(self, body: bytes, headers: Mapping[str, str] | None = None) -> EmbeddingsResult: ...


def json_object(raw: bytes | str, provider: str, invalid: str, not_object: str) -> dict[str, Any]:
    """`raw` as a JSON object, or a 502 saying `<provider>: <invalid>` (not JSON) or
    `<provider>: <not_object>` (JSON, but not an object)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(502, f"{provider}: {invalid}") from None
    if not isinstance(data, dict):
        raise UpstreamError(502, f"{provider}: {not_object}")
    return data


def upstream_json(provider: str, body: bytes) -> dict[str, Any]:
    """An upstream answer's JSON object, or the 502 that an unparsable answer is."""
    return json_object(body, provider, "upstream answered with invalid JSON",
                       "upstream answered with a non-object JSON body")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, then `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def json_error_message(body: bytes) -> tuple[str | None, str | None]:
    """(message, type) from the usual `{"error": {"message", "type"}}` / `{"message"}` shapes."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return None, None
    err = data.get("error", data)
    if isinstance(err, dict):
        msg = err.get("message") or data.get("message")
        kind = err.get("type") or err.get("status") or err.get("code")
        return (str(msg) if msg else None), (str(kind) if kind else None)
    if isinstance(err, str):
        return err, None
    return None, None


def upstream_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secrets: list[str]
) -> UpstreamError:
    """The common error mapping: a scrubbed message, Retry-After honoured."""
    message, kind = json_error_message(body)
    if message is None:
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return UpstreamError(status, scrub(f"{provider}: {message}", secrets), retry_after_seconds(headers), kind)


def secret_values(cfg: ProviderConfig) -> list[str]:
    values = []
    for field_name in ("api_key", "aws_secret_access_key", "aws_session_token", "aws_access_key_id"):
        secret = getattr(cfg, field_name)
        if secret is not None:
            values.append(secret.get_secret_value())
    values.extend(v for k, v in cfg.headers.items() if k.lower() in ("authorization", "api-key", "x-api-key"))
    return values
