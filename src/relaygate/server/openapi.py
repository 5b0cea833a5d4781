"""`/openapi.json`: every route the running app serves, described from the app's own
router (so a feature's endpoints appear when it is installed) plus the request and
response shapes of the data plane."""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from relaygate import __version__

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "code": {"type": ["string", "null"]}, "param": {"type": ["string", "null"]},
        "attempts": {"type": "array", "items": {"type": "object"}}}}},
}
_CHAT_REQUEST = {
    "type": "object", "required": ["model", "messages"],
    "properties": {"model": {"type": "string"}, "messages": {"type": "array", "items": {"type": "object"}},
                   "stream": {"type": "boolean"}, "max_tokens": {"type": "integer"},
                   "tools": {"type": "array", "items": {"type": "object"}}},
}
_MESSAGES_REQUEST = {
    "type": "object", "required": ["model", "messages", "max_tokens"],
    "properties": {"model": {"type": "string"}, "messages": {"type": "array", "items": {"type": "object"}},
                   "max_tokens": {"type": "integer", "minimum": 1}, "stream": {"type": "boolean"},
                   "system": {}, "tools": {"type": "array", "items": {"type": "object"}}},
}
_BODIES = {
    "/v1/chat/completions": _CHAT_REQUEST,
    "/chat/completions": _CHAT_REQUEST,
    "/v1/messages": _MESSAGES_REQUEST,
    "/v1/embeddings": {"type": "object", "required": ["model", "input"],
                       "properties": {"model": {"type": "string"}, "input": {}}},
}
_RESPONSE_HEADERS = {
    name: {"schema": {"type": "string"}, "description": text}
    for name, text in {
        "x-relaygate-request-id": "Request id (also in the ledger and logs).",
        "x-relaygate-provider": "The provider account that served the answer.",
        "x-relaygate-model": "The upstream model that served the answer.",
        "x-relaygate-attempts": "Upstream calls made for this request.",
        "x-relaygate-cache": "hit-exact | hit-semantic | miss | bypass",
        "x-relaygate-cost-usd": "Cost as a decimal string (streams: an SSE comment before the end).",
    }.items()
}


def _operation(path: str, method: str, handler: Any) -> dict[str, Any]:
    doc = inspect.getdoc(handler) or ""
    summary = doc.splitlines()[0] if doc else f"{method.upper()} {path}"
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "headers": _RESPONSE_HEADERS if path.startswith("/v1/") else {}},
            "default": {"description": "Error", "content": {"application/json": {"schema": _ERROR}}},
        },
    }
    if path.startswith("/admin"):
        op["security"] = [{"masterKey": []}]
    elif path.startswith("/v1") or path == "/chat/completions":
        op["security"] = [{"bearer": []}, {"apiKey": []}]
    if path in _BODIES and method == "post":
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _BODIES[path]}}}
    params = re.findall(r"\{(\w+)\}", path)
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    return op


def build_openapi(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        method = route.method.lower()
        if not path or method in ("head", "*"):
            continue
        paths.setdefault(path, {})[method] = _operation(path, method, route.handler)
    return {
        "openapi": "3.1.0",
        "info": {"title": "relaygate", "version": __version__,
                 "description": "Self-hosted LLM gateway: OpenAI and Anthropic wire formats, routing, "
                                "keys, limits, budgets, caching and usage."},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "masterKey": {"type": "http", "scheme": "bearer", "description": "The master key"},
        }},
    }


async def openapi_json(request: web.Request) -> web.Response:
    """This document."""
    return web.json_response(build_openapi(request.app))
