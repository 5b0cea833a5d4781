"""HTTP routes: the data plane (`/v1/...`), health, metrics, and the admin API."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from relaygate.errors import GatewayError
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats import openai as openai_fmt
from relaygate.formats.types import ChatRequest
from relaygate.observability.scrub import scrub
from relaygate.pipeline.auth import bearer_token
from relaygate.pipeline.context import RequestContext
from relaygate.pipeline.embeddings import embeddings
from relaygate.pipeline.inbound import parse_json, read_body, read_relaygate_headers
from relaygate.server.gateway import GATEWAY, Gateway
from relaygate.server.openapi import openapi_json
from relaygate.server.streaming import StreamRelay, format_cost

log = logging.getLogger("relaygate.server")
_FORMATS = {
    "openai": (openai_fmt.parse_request, openai_fmt.error_envelope),
    "anthropic": (anthropic_fmt.parse_request, anthropic_fmt.error_envelope),
}


def request_id() -> str:
    """The time in milliseconds (12 hex digits), then 48 random bits, without a syscall per
    request. Time first, so the usage ledger's primary key grows at its end: random ids
    cost the database a random B-tree page per insert (bench/ledger_insert.py: SQLite,
    300k rows in, 28 against 16 us of CPU a row, and growing). Not a counter: an id tells the time,
    which its answer's arrival tells anyway, but nothing of how many requests others made.
    (`random` reseeds itself in a forked worker, so `--workers N` processes draw different ids.)"""
    return f"{int(time.time() * 1000):012x}{random.getrandbits(48):012x}"


@dataclass(slots=True)
class Reply:
    """A whole answer, written by either front (aiohttp's or relaygate.server.front)."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str = "application/json"


def error_reply(fmt: str, err: GatewayError, headers: dict[str, str]) -> Reply:
    body = (anthropic_fmt.error_envelope if fmt == "anthropic" else openai_fmt.error_envelope)(err)
    hdrs = {**headers, **err.headers}
    if err.retry_after is not None:
        hdrs["retry-after"] = str(max(1, int(err.retry_after + 0.999)))
    return Reply(err.status, hdrs, body)


def to_response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type, headers=reply.headers)


def error_response(fmt: str, err: GatewayError, headers: dict[str, str]) -> web.Response:
    return to_response(error_reply(fmt, err, headers))


def answer_headers(ctx: RequestContext) -> dict[str, str]:
    h = {
        "x-relaygate-request-id": ctx.request_id,
        "x-relaygate-attempts": str(ctx.upstream_calls),
        "x-relaygate-cache": ctx.cache_status,
        "x-relaygate-cost-usd": format_cost(ctx.cost_usd),
    }
    if ctx.served is not None:
        h["x-relaygate-provider"] = ctx.served.provider
        h["x-relaygate-model"] = ctx.served.model
    elif ctx.attempts:
        h["x-relaygate-provider"] = ctx.attempts[-1].provider
        h["x-relaygate-model"] = ctx.attempts[-1].model
    if ctx.degraded:
        h["x-relaygate-degraded"] = "true"
    h.update(ctx.response_headers)
    return h


async def refuse(gw: Gateway, fmt: str, rid: str, headers: Any, body: Any, err: GatewayError) -> Reply:
    """A request refused before its pipeline could start (unreadable body, bad header,
    missing key) is still counted, logged and written to the ledger."""
    model = body.get("model") if isinstance(body, dict) else None
    ctx = RequestContext(rid, fmt, body if isinstance(body, dict) else {},
                         ChatRequest(model if isinstance(model, str) else "", []), headers)
    ctx.cache_status = "bypass"
    await gw.pipeline.refuse(ctx, err)
    return error_reply(fmt, err, {"x-relaygate-request-id": rid, "x-relaygate-attempts": "0"})


async def chat(gw: Gateway, fmt: str, headers: Mapping[str, str], raw: bytes | GatewayError) -> Reply | RequestContext:
    """One chat request, whichever front read it: a whole answer, or the context of a
    stream that is ready to relay (`stream_headers`, then StreamRelay). `raw` is the body,
    or why it could not be read. `headers` must answer lower-case names."""
    rid = headers.get("x-relaygate-request-id") or request_id()
    parse, _ = _FORMATS[fmt]
    body: Any = None
    try:
        if isinstance(raw, GatewayError):
            raise raw
        body = parse_json(raw)
        if fmt == "anthropic" and not bearer_token(headers):
            raise GatewayError(401, "missing API key: send 'x-api-key' or 'Authorization: Bearer'",
                               "authentication_error", "missing_api_key")
        chat = parse(body)
        ctx = RequestContext(rid, fmt, body, chat, headers)
        read_relaygate_headers(ctx)
    except GatewayError as err:
        return await refuse(gw, fmt, rid, headers, body, err)
    try:
        await gw.pipeline.run(ctx)
    except GatewayError as err:
        ctx.status = err.status
        return error_reply(fmt, err, answer_headers(ctx))
    except Exception:
        log.exception("request %s failed", rid)
        ctx.status = 500
        internal = GatewayError(500, f"internal error (request {rid})", "api_error", "internal_error")
        return error_reply(fmt, internal, answer_headers(ctx))
    if ctx.stream is not None:
        return ctx
    return await _respond(gw, ctx)


async def _respond(gw: Gateway, ctx: RequestContext) -> Reply:
    assert ctx.response is not None
    if ctx.usage is None:
        ctx.usage = ctx.response.usage
    await gw.pipeline.complete(ctx)
    model = ctx.response.model or (ctx.served.model if ctx.served else ctx.chat.model)
    if ctx.raw_response is not None:
        body = ctx.raw_response
    elif ctx.format == "anthropic":
        body = orjson.dumps(anthropic_fmt.dump_response(ctx.response, model))
    else:
        body = orjson.dumps(openai_fmt.dump_response(ctx.response, model))
    return Reply(200, answer_headers(ctx), body)


def stream_headers(ctx: RequestContext) -> dict[str, str]:
    headers = answer_headers(ctx)
    headers.pop("x-relaygate-cost-usd", None)  # known only at the end: sent as an SSE comment
    headers["content-type"] = "text/event-stream"
    headers["cache-control"] = "no-cache"
    return headers


async def handle_chat(request: web.Request, fmt: str) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    raw: bytes | GatewayError
    try:
        raw = await read_body(request, gw.cfg.server.max_body_bytes)
    except GatewayError as err:
        raw = err
    out = await chat(gw, fmt, request.headers, raw)
    if isinstance(out, Reply):
        await gw.durable()  # the usage record on disk before the answer leaves
        return to_response(out)
    resp = web.StreamResponse(status=200, headers=stream_headers(out))
    await resp.prepare(request)
    await StreamRelay(gw, out, _DurableEnd(gw, resp)).run()
    return resp


class _DurableEnd:
    """aiohttp's stream response, whose last bytes wait for the usage record."""

    __slots__ = ("gw", "resp")

    def __init__(self, gw: Gateway, resp: web.StreamResponse) -> None:
        self.gw = gw
        self.resp = resp

    async def write(self, data: bytes) -> None:
        await self.resp.write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        await self.gw.durable()
        await self.resp.write_eof(data)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Chat completion in the OpenAI format (JSON or SSE), routed to any provider."""
    return await handle_chat(request, "openai")


async def messages(request: web.Request) -> web.StreamResponse:
    """A message in the Anthropic format (JSON or SSE), routed to any provider."""
    return await handle_chat(request, "anthropic")


async def _principal_or_error(request: web.Request, fmt: str = "openai") -> Any:
    gw = request.app[GATEWAY]
    token = bearer_token(request.headers)
    if token:
        try:
            for resolve in gw.resolvers:
                principal = await resolve(token)
                if principal is not None:
                    return principal
        except GatewayError as exc:  # revoked, expired, rotated past its grace
            return error_response(fmt, exc, {})
    return error_response(fmt, GatewayError(401, "invalid API key", "authentication_error", "invalid_api_key"), {})


async def list_models(request: web.Request) -> web.Response:
    """The route names this key may use, as OpenAI models."""
    gw = request.app[GATEWAY]
    principal = await _principal_or_error(request)
    if isinstance(principal, web.Response):
        return principal
    names = sorted(gw.cfg.routes)
    if principal.models is not None:
        names = [n for n in names if n in principal.models] + sorted(
            m for m in principal.models if m not in gw.cfg.routes)
    created = int(gw.services.get("started", time.time()))
    data = [{"id": n, "object": "model", "created": created, "owned_by": "relaygate"} for n in names]
    return web.json_response({"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode())


async def health(request: web.Request) -> web.Response:
    """Liveness."""
    return web.json_response({"status": "ok"})


async def health_ready(request: web.Request) -> web.Response:
    """Readiness: storage, Redis, and at least one provider reachable (503 otherwise)."""
    gw = request.app[GATEWAY]
    checks: dict[str, Any] = {}
    ok = True
    for name, check in gw.services.get("readiness", {}).items():
        try:
            await asyncio.wait_for(check(), 2.0)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"failed: {scrub(str(exc), gw.secrets())}"
            ok = False
    reachable = await _providers_reachable(gw)
    checks["providers"] = reachable
    if not any(v == "ok" for v in reachable.values()):
        ok = False
    return web.json_response({"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503)


async def _providers_reachable(gw: Gateway) -> dict[str, str]:
    from urllib.parse import urlsplit

    async def probe(name: str) -> str:
        cfg = gw.cfg.providers[name]
        if cfg.type == "mock":
            return "ok"
        try:
            adapter, _ = await gw.registry.get(name)
        except GatewayError as exc:
            return f"failed: {exc.message}"
        url = getattr(adapter, "url", None) or cfg.base_url
        if not url:
            return "unknown"
        parts = urlsplit(str(url))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), 1.0)
            writer.close()
            return "ok"
        except (OSError, TimeoutError) as exc:
            return f"failed: {type(exc).__name__}"

    names = list(gw.cfg.providers)
    results = await asyncio.gather(*(probe(n) for n in names))
    return dict(zip(names, results, strict=True))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics."""
    gw = request.app[GATEWAY]
    body = gw.metrics.render(await gw.breakers.snapshot())
    return web.Response(body=body, headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"})


@web.middleware
async def envelope_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (404 route, 405, 413) in our JSON envelope."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        fmt = "anthropic" if request.path.startswith("/v1/messages") else "openai"
        kind = {404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large"}.get(exc.status, "api_error")
        return error_response(fmt, GatewayError(exc.status, exc.reason or "error", kind), {})


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(client_max_size=gw.cfg.server.max_body_bytes + 1, middlewares=[envelope_errors])
    app[GATEWAY] = gw
    gw.services.setdefault("started", time.time())
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", health_ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    from relaygate.server import admin

    admin.add_routes(app)

    async def _close(_: web.Application) -> None:
        await gw.close()

    app.on_cleanup.append(_close)
    return app
