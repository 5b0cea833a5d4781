"""The admin API (`/admin/*`), behind the master key."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from relaygate.config import ConfigError
from relaygate.errors import GatewayError
from relaygate.formats.openai import error_envelope
from relaygate.pipeline.auth import bearer_token, hash_key
from relaygate.server.gateway import GATEWAY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def admin_error(err: GatewayError) -> web.Response:
    return web.Response(status=err.status, body=error_envelope(err), content_type="application/json")


def require_master(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        token = bearer_token(request.headers)
        master = gw.cfg.server.master_key
        if not master:
            return admin_error(GatewayError(403, "the admin API needs server.master_key to be set",
                                            "permission_error", "no_master_key"))
        if not token or hash_key(token) != hash_key(master.get_secret_value()):
            return admin_error(GatewayError(401, "the admin API needs the master key", "authentication_error",
                                            "invalid_api_key"))
        try:
            return await handler(request)
        except GatewayError as err:
            return admin_error(err)

    return wrapped


@require_master
async def breakers(request: web.Request) -> web.Response:
    """Circuit breaker state per target."""
    gw = request.app[GATEWAY]
    snap = await gw.breakers.snapshot()
    return json({"data": [
        {"target": b.target, "state": b.state, "recent_failures": b.recent_failures, "opened_at": b.opened_at}
        for b in snap
    ]})


@require_master
async def recent_requests(request: web.Request) -> web.Response:
    """The most recent requests (live log), newest first: `?limit=50`."""
    try:
        limit = max(1, min(200, int(request.query.get("limit", "50"))))
    except ValueError:
        raise GatewayError(400, "limit must be an integer", "invalid_request_error", param="limit") from None
    return json({"data": request.app[GATEWAY].recent.latest(limit)})


@require_master
async def reload_config(request: web.Request) -> web.Response:
    """Re-reads the config file the gateway started with and swaps in its routes."""
    gw = request.app[GATEWAY]
    reload = gw.services.get("reload")
    if reload is None:
        raise GatewayError(409, "this gateway was started without a config file: nothing to reload",
                           "invalid_request_error", "no_config_file")
    try:
        routes = await reload()
    except ConfigError as exc:
        raise GatewayError(400, "config not reloaded: " + "; ".join(exc.problems), "invalid_request_error",
                           "invalid_config") from None
    return json({"reloaded": True, "routes": routes})


@functools.cache
def _ui_page() -> bytes:
    return (Path(__file__).with_name("static") / "ui.html").read_bytes()


async def ui(request: web.Request) -> web.Response:
    """The web dashboard (it asks for the master key and calls the admin API)."""
    return web.Response(body=_ui_page(), content_type="text/html",
                        headers={"content-security-policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                            "script-src 'unsafe-inline'"})


def add_routes(app: web.Application) -> None:
    """The core admin routes, then those the installed features registered in
    `gw.admin_routes` (keys, usage, credentials, cache, ...)."""
    app.router.add_get("/admin/breakers", breakers)
    app.router.add_get("/admin/requests", recent_requests)
    app.router.add_post("/admin/config/reload", reload_config)
    app.router.add_get("/ui", ui)
    for add in app[GATEWAY].admin_routes:
        add(app)
