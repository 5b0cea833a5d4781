"""Reading what a client sent, shared by every data-plane route: the JSON body (bounded)
and the `x-relaygate-*` request headers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relaygate.errors import GatewayError
from relaygate.pipeline.context import RequestContext

CACHE_DIRECTIVES = ("no-cache", "no-store", "no-semantic")


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body exceeds {limit} bytes", "request_too_large", "body_too_large")


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large(limit) from None


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "request body is not valid JSON", "invalid_request_error", "invalid_json") from None


async def read_json(request: web.Request, limit: int) -> Any:
    return parse_json(await read_body(request, limit))


def read_relaygate_headers(ctx: RequestContext) -> None:
    """`x-relaygate-metadata` (a JSON object), `-trace-id` and `-cache` into the context."""
    meta = ctx.headers.get("x-relaygate-metadata")
    if meta:
        try:
            parsed = orjson.loads(meta)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "x-relaygate-metadata: not valid JSON", "invalid_request_error",
                               "invalid_metadata", "x-relaygate-metadata") from None
        if not isinstance(parsed, dict):
            raise GatewayError(400, "x-relaygate-metadata: must be a JSON object", "invalid_request_error",
                               "invalid_metadata", "x-relaygate-metadata")
        ctx.metadata = parsed
    ctx.trace_id = ctx.headers.get("x-relaygate-trace-id")
    cache = ctx.headers.get("x-relaygate-cache")
    if cache:
        if cache not in CACHE_DIRECTIVES:
            raise GatewayError(400, "x-relaygate-cache: expected no-cache, no-store or no-semantic",
                               "invalid_request_error", "invalid_header", "x-relaygate-cache")
        ctx.cache_control = cache
