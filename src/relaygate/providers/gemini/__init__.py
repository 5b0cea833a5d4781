"""Google Gemini: AI Studio (`type: gemini`, key in `x-goog-api-key`) and Vertex AI
(`type: vertex`, `project` + `location`, a bearer token in `api_key` for now). Both speak
`generateContent` / `streamGenerateContent?alt=sse`; embeddings are `batchEmbedContents`
(AI Studio) and `predict` (Vertex)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.errors import GatewayError, UpstreamError
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
from relaygate.providers.gemini import codec

AI_STUDIO_BASE_URL = "https://generativelanguage.googleapis.com"
VERTEX_DEFAULT_LOCATION = "us-central1"
VERTEX_PREDICT_BATCH = 250
AI_STUDIO_EMBED_BATCH = 100


class GeminiAdapter:
    native_format: str | None = None

    def __init__(self, name: str, cfg: ProviderConfig, api_key: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.vertex = cfg.type == "vertex"
        key = api_key or (cfg.api_key.get_secret_value() if cfg.api_key else None)
        self.headers = {"content-type": "application/json", **cfg.headers}
        has_auth = any(k.lower() == "authorization" for k in cfg.headers)
        if self.vertex:
            if not cfg.project:
                raise ValueError(f"provider {name!r}: a vertex provider needs 'project'")
            location = cfg.location or VERTEX_DEFAULT_LOCATION
            host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
            base = (cfg.base_url or f"https://{host}").rstrip("/")
            self.url = (f"{base}/{cfg.api_version or 'v1'}/projects/{quote(cfg.project, safe='')}"
                        f"/locations/{quote(location, safe='')}/publishers/google/models")
            if key and not has_auth:
                self.headers["authorization"] = f"Bearer {key}"
        else:
            base = (cfg.base_url or AI_STUDIO_BASE_URL).rstrip("/")
            version = cfg.api_version or "v1beta"
            self.url = f"{base}/models" if base.endswith(("/v1beta", "/v1", "/v1alpha")) else f"{base}/{version}/models"
            if key:
                self.headers["x-goog-api-key"] = key
        self._secrets = secret_values(cfg) + ([key] if key else [])

    def _model_url(self, model: str, action: str) -> str:
        model = model.removeprefix("models/")
        return f"{self.url}/{quote(model, safe='')}:{action}"

    def chat_request(self, call: ChatCall) -> UpstreamRequest:
        body = codec.dump_request(call.request, call.model)
        body.update(call.override_params)
        stream = call.request.stream
        url = self._model_url(call.model, "streamGenerateContent") + "?alt=sse" if stream else \
            self._model_url(call.model, "generateContent")
        return UpstreamRequest("POST", url, self.headers, orjson.dumps(body), stream)

    def parse_chat(self, body: bytes) -> ChatResponse:
        return codec.parse_response(upstream_json(self.name, body))

    def stream_decoder(self) -> StreamDecoder:
        return codec.StreamDecoder(self.name)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return upstream_error(self.name, status, headers, body, self._secrets)

    def secrets(self) -> list[str]:
        return self._secrets

    # --- embeddings ----------------------------------------------------------------------

    def embeddings_request(self, call: EmbeddingsCall) -> list[UpstreamRequest]:
        texts: list[str] = []
        for item in call.inputs:
            if not isinstance(item, str):
                raise GatewayError(400, "Gemini embedding models take text, not token arrays",
                                   "invalid_request_error", "unsupported_parameter", "input")
            texts.append(item)
        model = call.model.removeprefix("models/")
        out: list[UpstreamRequest] = []
        if self.vertex:
            # gemini-embedding-* takes one instance per predict call on Vertex.
            batch = 1 if model.startswith("gemini-embedding") else VERTEX_PREDICT_BATCH
            for start in range(0, len(texts), batch):
                body: dict[str, Any] = {"instances": [{"content": t} for t in texts[start:start + batch]]}
                if call.dimensions is not None:
                    body["parameters"] = {"outputDimensionality": call.dimensions}
                body.update(call.override_params)
                out.append(UpstreamRequest("POST", self._model_url(model, "predict"), self.headers, orjson.dumps(body)))
            return out
        for start in range(0, len(texts), AI_STUDIO_EMBED_BATCH):
            requests = []
            for text in texts[start:start + AI_STUDIO_EMBED_BATCH]:
                one: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
                if call.dimensions is not None:
                    one["outputDimensionality"] = call.dimensions
                one.update(call.override_params)
                requests.append(one)
            out.append(UpstreamRequest("POST", self._model_url(model, "batchEmbedContents"), self.headers,
                                       orjson.dumps({"requests": requests})))
        return out

    def parse_embeddings(self, body: bytes, headers: Mapping[str, str] | None = None) -> EmbeddingsResult:
        """AI Studio's batch answer reports no token count (0 here: the caller estimates)."""
        data = upstream_json(self.name, body)
        if "predictions" in data:
            vectors: list[list[float]] = []
            tokens = 0
            for p in data["predictions"] or []:
                emb = (p or {}).get("embeddings") or {}
                vectors.append([float(v) for v in emb.get("values") or []])
                tokens += int((emb.get("statistics") or {}).get("token_count") or 0)
            return EmbeddingsResult(vectors, tokens, "")
        items = data.get("embeddings")
        if items is None and "embedding" in data:
            items = [data["embedding"]]
        if not isinstance(items, list):
            raise UpstreamError(502, f"{self.name}: embeddings answer without 'embeddings'")
        vectors = [[float(v) for v in (e or {}).get("values") or []] for e in items]
        tokens = int((data.get("usageMetadata") or {}).get("promptTokenCount") or 0)
        return EmbeddingsResult(vectors, tokens, "")



