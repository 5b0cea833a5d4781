"""Anthropic Messages API (direct)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.errors import UpstreamError
from relaygate.formats import anthropic as fmt
from relaygate.formats.types import ChatResponse
from relaygate.providers.base import (
    ChatCall,
    StreamDecoder,
    UpstreamRequest,
    secret_values,
    upstream_error,
    upstream_json,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicAdapter:
    native_format: str | None = "anthropic"

    def __init__(self, name: str, cfg: ProviderConfig, api_key: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.url = (cfg.base_url or ANTHROPIC_BASE_URL).rstrip("/") + "/v1/messages"
        key = api_key or (cfg.api_key.get_secret_value() if cfg.api_key else None)
        self.headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION, **cfg.headers}
        if key:
            self.headers["x-api-key"] = key
        self._secrets = secret_values(cfg) + ([key] if key else [])

    def chat_request(self, call: ChatCall) -> UpstreamRequest:
        if call.native_body is not None:
            body = dict(call.native_body)
            body["model"] = call.model
        else:
            body = fmt.dump_request(call.request, call.model)
        if call.override_params:
            body.update(call.override_params)
        return UpstreamRequest("POST", self.url, self.headers, orjson.dumps(body), bool(body.get("stream")))

    def parse_chat(self, body: bytes) -> ChatResponse:
        data = upstream_json(self.name, body)
        return fmt.parse_response(data)

    def stream_decoder(self) -> StreamDecoder:
        return fmt.StreamDecoder()

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return upstream_error(self.name, status, headers, body, self._secrets)

    def secrets(self) -> list[str]:
        return self._secrets
