"""AWS Bedrock runtime: Converse / ConverseStream for every model (the default), and
InvokeModel / InvokeModelWithResponseStream with Anthropic bodies for Claude when the
target model is prefixed `invoke/` (e.g. `invoke/us.anthropic.claude-sonnet-4-5-v1:0`);
`converse/` forces Converse. Embeddings: Titan text (one input per call) and Cohere
(batches of 96) through InvokeModel.

Requests are SigV4-signed by the transport (`UpstreamRequest.sign`), with the provider's
`aws_*` keys or the standard AWS credential chain; a configured `api_key` is a Bedrock API
key sent as a bearer token instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.errors import GatewayError, UpstreamError
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats.types import ChatRequest, ChatResponse, ImagePart, ToolResultPart
from relaygate.providers.base import (
    ChatCall,
    EmbeddingsCall,
    EmbeddingsResult,
    StreamDecoder,
    UpstreamRequest,
    secret_values,
    upstream_json,
)
from relaygate.providers.bedrock import converse
from relaygate.providers.bedrock.errors import bedrock_error
from relaygate.providers.bedrock.signing import AwsSigner, bearer
from relaygate.providers.bedrock.stream import BedrockStreamDecoder

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
EVENT_STREAM = "application/vnd.amazon.eventstream"
COHERE_BATCH = 96
DEFAULT_REGION = "us-east-1"


def split_model(model: str) -> tuple[str, str]:
    """(`converse` | `invoke`, Bedrock model id) from a target's model name."""
    api, sep, rest = model.partition("/")
    if sep and api in ("converse", "invoke") and rest:
        return api, rest
    return "converse", model


def model_url(base: str, model_id: str, action: str) -> str:
    """Model ids and inference-profile ids/ARNs are one path segment: `:` and `/` encoded."""
    return f"{base}/model/{quote(model_id, safe='')}/{action}"


def require_inline_images(req: ChatRequest) -> None:
    """Claude on Bedrock takes base64 image sources only (no URL sources)."""
    for m in req.messages:
        for p in m.content:
            inner = p.content if isinstance(p, ToolResultPart) else [p]
            for q in inner:
                if isinstance(q, ImagePart) and q.data is None:
                    raise converse.unsupported("Bedrock cannot fetch image URLs: send images inline as base64 "
                                               "data: URLs (or an Anthropic base64 image source)", "messages")


class BedrockAdapter:
    native_format: str | None = None

    def __init__(self, name: str, cfg: ProviderConfig, api_key: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.region = cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        self.url = (cfg.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com").rstrip("/")
        key = api_key or (cfg.api_key.get_secret_value() if cfg.api_key else None)
        self.sign: Any = bearer(key) if key else AwsSigner(name, cfg, self.region)
        self.headers = {"content-type": "application/json", **cfg.headers}
        self._secrets = secret_values(cfg) + ([key] if key else [])

    def _request(self, model_id: str, action: str, body: dict[str, Any], stream: bool) -> UpstreamRequest:
        headers = {**self.headers, "accept": EVENT_STREAM if stream else "application/json"}
        if action == "invoke-with-response-stream":
            headers["x-amzn-bedrock-accept"] = "application/json"
        return UpstreamRequest("POST", model_url(self.url, model_id, action), headers, orjson.dumps(body),
                               stream, self.sign)

    def chat_request(self, call: ChatCall) -> UpstreamRequest:
        api, model_id = split_model(call.model)
        stream = call.request.stream
        if api == "invoke":
            require_inline_images(call.request)
            body = anthropic_fmt.dump_request(call.request, model_id)
            body.pop("model", None)
            body.pop("stream", None)
            body["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
            if isinstance(call.request.extra.get("thinking"), dict):
                body["thinking"] = call.request.extra["thinking"]
            action = "invoke-with-response-stream" if stream else "invoke"
        else:
            body = converse.dump_request(call.request, model_id)
            action = "converse-stream" if stream else "converse"
        body.update(call.override_params)
        return self._request(model_id, action, body, stream)

    def parse_chat(self, body: bytes) -> ChatResponse:
        data = upstream_json(self.name, body)
        if "output" in data:
            return converse.parse_response(data)
        if data.get("type") == "message":
            return anthropic_fmt.parse_response(data)
        raise UpstreamError(502, f"{self.name}: unrecognised Bedrock answer (neither Converse nor Messages)")

    def stream_decoder(self) -> StreamDecoder:
        return BedrockStreamDecoder(self.name, self._secrets)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return bedrock_error(self.name, status, headers, body, self._secrets)

    def secrets(self) -> list[str]:
        return self._secrets

    # --- embeddings ----------------------------------------------------------------------

    def embeddings_request(self, call: EmbeddingsCall) -> list[UpstreamRequest]:
        _, model_id = split_model(call.model)
        texts: list[str] = []
        for item in call.inputs:
            if not isinstance(item, str):
                raise GatewayError(400, "Bedrock embedding models take text, not token arrays", "invalid_request_error",
                                   "unsupported_parameter", "input")
            texts.append(item)
        family = model_id.split(".", 2)
        if "titan-embed" in model_id:
            bodies: list[dict[str, Any]] = []
            for text in texts:
                body: dict[str, Any] = {"inputText": text}
                if call.dimensions is not None:
                    body["dimensions"] = call.dimensions
                bodies.append({**body, **call.override_params})
        elif "cohere" in family[:2] and "embed" in model_id:
            if call.dimensions is not None and "v4" not in model_id:
                raise GatewayError(400, f"{model_id} has a fixed size: 'dimensions' is not supported",
                                   "invalid_request_error", "unsupported_parameter", "dimensions")
            bodies = []
            for start in range(0, len(texts), COHERE_BATCH):
                body = {"texts": texts[start:start + COHERE_BATCH], "input_type": "search_document",
                        "embedding_types": ["float"]}
                if call.dimensions is not None:
                    body["output_dimension"] = call.dimensions
                bodies.append({**body, **call.override_params})
        else:
            raise GatewayError(400, f"Bedrock model {model_id!r} is not a supported embedding model "
                               "(amazon.titan-embed-* or cohere.embed-*)", "invalid_request_error",
                               "unsupported_model", "model")
        return [self._request(model_id, "invoke", b, False) for b in bodies]

    def parse_embeddings(self, body: bytes, headers: Mapping[str, str] | None = None) -> EmbeddingsResult:
        data = upstream_json(self.name, body)
        header_tokens = (headers or {}).get("x-amzn-bedrock-input-token-count")
        if "embedding" in data:  # Titan
            tokens = int(data.get("inputTextTokenCount") or header_tokens or 0)
            return EmbeddingsResult([[float(v) for v in data["embedding"]]], tokens, "")
        raw = data.get("embeddings")
        if isinstance(raw, dict):  # Cohere with embedding_types
            raw = raw.get("float")
        if not isinstance(raw, list):
            raise UpstreamError(502, f"{self.name}: embedding answer without embeddings")
        vectors = [[float(v) for v in vec] for vec in raw]
        texts = data.get("texts") or []
        tokens = int(header_tokens) if header_tokens else sum(math.ceil(len(str(t)) / 4) for t in texts)
        return EmbeddingsResult(vectors, tokens, "")
