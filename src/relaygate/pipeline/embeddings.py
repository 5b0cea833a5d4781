"""`POST /v1/embeddings`: OpenAI's embeddings API in front of every provider that has one.

The request runs through the gateway's own stages that make sense without a chat
(metrics, recent, auth, keys, limits, route, cost: found by name in `gw.stages`, in their
order),
then `EmbeddingsStage` routes it with the same router, breakers and attempt records as a
chat call. Adapters offer embeddings through the optional `EmbeddingsAdapter` capability;
one whose provider has no embeddings API answers a 400 naming the provider.
Vectors are fetched as floats and, for `encoding_format: base64`, sent as little-endian
float32 bytes in base64, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from relaygate.errors import GatewayError, UpstreamError, invalid
from relaygate.formats.types import ChatRequest, Message, TextPart, Usage
from relaygate.mock_upstream.embeddings import embedding_vector
from relaygate.pipeline.base import Pipeline
from relaygate.pipeline.call import CallStage
from relaygate.pipeline.context import RequestContext
from relaygate.pipeline.inbound import read_json, read_relaygate_headers
from relaygate.pipeline.route import routing_facts
from relaygate.providers.base import EmbeddingsAdapter, EmbeddingsCall, EmbeddingsResult
from relaygate.providers.http import Deadlines
from relaygate.providers.registry import ProviderRegistry
from relaygate.routing.engine import AllTargetsFailed, Router
from relaygate.routing.plan import Leaf, first_leaf

log = logging.getLogger("relaygate.embeddings")

# Stages that mean the same for embeddings as for chat (cache and content guards do not).
EMBEDDINGS_STAGES = ("metrics", "recent", "auth", "keys", "limits", "route", "cost")
MAX_INPUTS = 2048
MOCK_DIMENSIONS = 8
# Upstream calls of one request in flight at once (Titan takes one text per call).
PARALLEL_CALLS = 8


@dataclass(slots=True)
class EmbeddingsBody:
    model: str
    inputs: list[str | list[int]]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


def parse_body(body: Any) -> EmbeddingsBody:
    """An OpenAI CreateEmbeddingRequest; a 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required", "model")
    raw = body.get("input")
    inputs: list[str | list[int]]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        inputs = [list(raw)]
    elif isinstance(raw, list) and raw and all(
        isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x) for x in raw
    ):
        inputs = [list(x) for x in raw]
    else:
        raise invalid("'input' must be a non-empty string, array of strings, token array or array of token arrays",
                      "input")
    if len(inputs) > MAX_INPUTS:
        raise invalid(f"'input' has {len(inputs)} items; at most {MAX_INPUTS} per request", "input")
    if any(isinstance(x, str) and not x for x in inputs):
        raise invalid("'input' must not contain empty strings", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise invalid("'dimensions' must be a positive integer", "dimensions")
    user = body.get("user")
    return EmbeddingsBody(model, inputs, fmt, dims, user if isinstance(user, str) else None)


def estimate_tokens(inputs: list[str | list[int]]) -> int:
    return sum(len(x) if isinstance(x, list) else math.ceil(len(x) / 4) for x in inputs)


def encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def response_body(result: EmbeddingsResult, model: str, encoding: str) -> dict[str, Any]:
    """OpenAI's CreateEmbeddingResponse."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
                 for i, v in enumerate(result.vectors)],
        "model": model,
        "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
    }


class EmbeddingsStage:
    """The terminal stage for embeddings: route, call, and combine the upstream answers."""

    def __init__(self, registry: ProviderRegistry, router: Router, deadlines: Deadlines,
                 failure: CallStage) -> None:
        self.registry = registry
        self.router = router
        self.deadlines = deadlines
        self.failure = failure

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.plan is not None
        request: EmbeddingsBody = ctx.state["embeddings_request"]

        async def attempt(leaf: Leaf) -> EmbeddingsResult:
            cfg = self.registry.configs.get(leaf.provider)
            if cfg is not None and cfg.type == "mock":
                return mock_embeddings(request, leaf.model)
            adapter, transport = await self.registry.get(leaf.provider, leaf.credential)
            if not isinstance(adapter, EmbeddingsAdapter):
                kind = cfg.type if cfg is not None else "?"
                raise UpstreamError(400, f"provider {leaf.provider!r} ({kind}) has no embeddings API",
                                    error_type="unsupported_provider")
            call = EmbeddingsCall(request.inputs, leaf.model, request.dimensions, request.user,
                                  dict(leaf.override_params))
            try:
                upstream = adapter.embeddings_request(call)
            except GatewayError as exc:
                raise UpstreamError(exc.status, exc.message, error_type=exc.code) from None
            gate = asyncio.Semaphore(PARALLEL_CALLS)

            async def one(index: int) -> EmbeddingsResult:
                async with gate:
                    resp = await transport.send(upstream[index], self.deadlines)
                if resp.status >= 400:
                    raise adapter.error(resp.status, resp.headers, resp.body)
                return adapter.parse_embeddings(resp.body, resp.headers)

            parts = await asyncio.gather(*(one(i) for i in range(len(upstream))))
            vectors = [v for p in parts for v in p.vectors]
            if len(vectors) != len(request.inputs):
                raise UpstreamError(502, f"{leaf.provider}: {len(vectors)} embeddings for {len(request.inputs)} inputs")
            tokens = sum(p.input_tokens for p in parts)
            if tokens == 0:
                tokens = estimate_tokens(request.inputs)
                ctx.usage_estimated = True
            return EmbeddingsResult(vectors, tokens, next((p.model for p in parts if p.model), ""))

        try:
            routed = await self.router.run(ctx.plan, attempt, routing_facts(ctx), ctx.attempts)
        except AllTargetsFailed as exc:
            raise self.failure.failure(ctx, exc.last) from None
        ctx.served = routed.leaf
        ctx.degraded = routed.leaf != first_leaf(ctx.plan)
        ctx.state["embeddings_result"] = routed.value
        ctx.usage = Usage(input_tokens=routed.value.input_tokens)


def placeholder_chat(request: EmbeddingsBody) -> ChatRequest:
    """The chat view of an embeddings request that the shared stages read: the texts as
    the prompt (the limits stage reserves their estimated tokens) and no output."""
    text = "\n".join(x if isinstance(x, str) else " ".join(map(str, x)) for x in request.inputs)
    return ChatRequest(model=request.model, messages=[Message("user", [TextPart(text)])], max_tokens=1,
                       user=request.user)


def mock_embeddings(request: EmbeddingsBody, model: str) -> EmbeddingsResult:
    """The built-in `mock` provider: the mock upstream's deterministic unit vectors."""
    texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in request.inputs]
    dims = request.dimensions or MOCK_DIMENSIONS
    return EmbeddingsResult([embedding_vector(t, dims) for t in texts], estimate_tokens(request.inputs), model)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """The `/v1/embeddings` route handler: its answer leaves once its usage record is on disk."""
    from relaygate.server.gateway import GATEWAY

    resp = await _embeddings(request)
    await request.app[GATEWAY].durable()
    return resp


async def _embeddings(request: web.Request) -> web.StreamResponse:
    # The server's public helpers (imported here: server.app imports this module).
    from relaygate.server.app import answer_headers, error_response, refuse, request_id, to_response
    from relaygate.server.gateway import GATEWAY

    gw = request.app[GATEWAY]
    rid = request.headers.get("x-relaygate-request-id") or request_id()
    headers = request.headers
    body: Any = None
    try:
        body = await read_json(request, gw.cfg.server.max_body_bytes)
        parsed = parse_body(body)
        ctx = RequestContext(rid, "openai", body, placeholder_chat(parsed), headers)
        read_relaygate_headers(ctx)
    except GatewayError as err:
        return to_response(await refuse(gw, "openai", rid, headers, body, err))
    ctx.cache_status = "bypass"
    ctx.state["embeddings_request"] = parsed
    stages = [s for s in gw.stages if s.name in EMBEDDINGS_STAGES]
    terminal = EmbeddingsStage(gw.registry, gw.router, gw.call.deadlines, gw.call)
    pipeline = Pipeline(stages, terminal)
    try:
        await pipeline.run(ctx)
    except GatewayError as err:
        ctx.status = err.status
        return error_response("openai", err, answer_headers(ctx))
    except Exception:
        log.exception("embeddings request %s failed", rid)
        ctx.status = 500
        return error_response("openai", GatewayError(500, f"internal error (request {rid})", "api_error",
                                                      "internal_error"), answer_headers(ctx))
    await pipeline.complete(ctx)
    result: EmbeddingsResult = ctx.state["embeddings_result"]
    model = ctx.served.model if ctx.served else parsed.model
    payload = response_body(result, model, parsed.encoding_format)
    return web.Response(status=200, body=orjson.dumps(payload), content_type="application/json",
                        headers=answer_headers(ctx))


