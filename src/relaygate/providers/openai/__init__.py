"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio, ...): Chat Completions."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.errors import UpstreamError
from relaygate.formats import openai as fmt
from relaygate.formats.types import ChatResponse
from relaygate.providers.base import (
    ChatCall,
    EmbeddingsCall,
    EmbeddingsResult,
    StreamDecoder,
    UpstreamRequest,
    secret_values,
    upstream_error,
    upstream_json,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAIAdapter:
    native_format: str | None = "openai"

    def __init__(self, name: str, cfg: ProviderConfig, api_key: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        base = cfg.base_url or (OPENAI_BASE_URL if cfg.type in ("openai", "mock") else None)
        if base is None:
            raise ValueError(f"provider {name!r}: an openai-compatible provider needs base_url")
        self.base_url = base.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        key = api_key or (cfg.api_key.get_secret_value() if cfg.api_key else None)
        self.headers = {"content-type": "application/json", **cfg.headers}
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        self._secrets = secret_values(cfg) + ([key] if key else [])
        # api.openai.com deprecated max_tokens for reasoning models; compatible servers
        # mostly know only max_tokens.
        self.max_tokens_field = "max_completion_tokens" if cfg.type == "openai" else "max_tokens"

    def chat_request(self, call: ChatCall) -> UpstreamRequest:
        if call.native_body is not None:
            body = dict(call.native_body)
            body["model"] = call.model
            if body.get("stream"):
                opts = dict(body.get("stream_options") or {})
                opts["include_usage"] = True
                body["stream_options"] = opts
        else:
            body = fmt.dump_request(call.request, call.model, max_tokens_field=self.max_tokens_field)
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

    def embeddings_url(self, model: str) -> str:
        return self.base_url + "/embeddings"

    def embeddings_request(self, call: EmbeddingsCall) -> list[UpstreamRequest]:
        """One call for the whole batch; vectors are always asked for as floats (the
        gateway encodes base64 for its client itself)."""
        body: dict[str, Any] = {"model": call.model, "input": call.inputs, "encoding_format": "float"}
        if call.dimensions is not None:
            body["dimensions"] = call.dimensions
        if call.user:
            body["user"] = call.user
        body.update(call.override_params)
        return [UpstreamRequest("POST", self.embeddings_url(call.model), self.headers, orjson.dumps(body))]

    def parse_embeddings(self, body: bytes, headers: Mapping[str, str] | None = None) -> EmbeddingsResult:
        data = upstream_json(self.name, body)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise UpstreamError(502, f"{self.name}: embeddings answer without 'data'")
        ordered = sorted(items, key=lambda d: int(d.get("index", 0)))
        vectors = [_vector(d.get("embedding")) for d in ordered]
        usage = data.get("usage") or {}
        return EmbeddingsResult(vectors, int(usage.get("prompt_tokens") or 0), str(data.get("model", "")))


def _vector(raw: Any) -> list[float]:
    """A float list, or little-endian float32 base64 (servers that ignore encoding_format)."""
    if isinstance(raw, str):
        data = base64.b64decode(raw)
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    return [float(v) for v in raw or []]
