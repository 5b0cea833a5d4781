"""`/admin/keys`, `/admin/teams`, `/admin/orgs`, `/admin/credentials` (master key only).
Tokens are returned once, at create and rotate; credential secrets never."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from relaygate.errors import GatewayError
from relaygate.keys.records import (
    CredentialIn,
    CredentialPatch,
    GroupPatch,
    KeyIn,
    KeyPatch,
    OrgIn,
    RotateIn,
    TeamIn,
)
from relaygate.keys.resolver import VirtualKeys
from relaygate.keys.store import KeyStore, credential_view, group_view, key_view
from relaygate.server.admin import json, require_master
from relaygate.server.gateway import GATEWAY, Gateway

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class KeysService:
    """What the admin handlers work with, kept in `gw.services["keys"]`."""

    store: KeyStore
    resolver: VirtualKeys
    rotation_grace_s: float

    async def credential_changed(self, gw: Gateway, name: str) -> None:
        gw.registry.forget(name)
        if self.resolver.publish is not None:
            try:
                await self.resolver.publish("cred:" + name)
            except Exception:  # noqa: S110 - other replicas fall back on their adapter cache rules
                pass


def _service(request: web.Request) -> tuple[Gateway, KeysService]:
    gw = request.app[GATEWAY]
    svc: KeysService = gw.services["keys"]
    return gw, svc


async def _body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data: Any = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise GatewayError(400, "body is not valid JSON", "invalid_request_error", "invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise GatewayError(400, problems, "invalid_request_error", "invalid_body") from None


# --- keys ------------------------------------------------------------------------------

@require_master
async def create_key(request: web.Request) -> web.Response:
    gw, svc = _service(request)
    data = await _body(request, KeyIn)
    if data.route is not None and data.route not in gw.cfg.routes:
        raise GatewayError(400, f"no route named {data.route!r}", "invalid_request_error", "route_not_found")
    row, token = await svc.store.create_key(data)
    return json({**key_view(row), "key": token}, status=201)


@require_master
async def list_keys(request: web.Request) -> web.Response:
    _, svc = _service(request)
    rows = await svc.store.list_keys(request.query.get("team"), request.query.get("org"))
    return json({"data": [key_view(r) for r in rows]})


@require_master
async def get_key(request: web.Request) -> web.Response:
    _, svc = _service(request)
    return json(key_view(await svc.store.get_key(request.match_info["id"])))


@require_master
async def patch_key(request: web.Request) -> web.Response:
    _, svc = _service(request)
    key_id = request.match_info["id"]
    row = await svc.store.update_key(key_id, await _body(request, KeyPatch))
    await svc.resolver.invalidate(key_id)
    return json(key_view(row))


@require_master
async def delete_key(request: web.Request) -> web.Response:
    _, svc = _service(request)
    key_id = request.match_info["id"]
    row = await svc.store.revoke_key(key_id)
    await svc.resolver.invalidate(key_id)
    return json(key_view(row))


@require_master
async def rotate_key(request: web.Request) -> web.Response:
    _, svc = _service(request)
    key_id = request.match_info["id"]
    data = await _body(request, RotateIn)
    grace = svc.rotation_grace_s if data.grace_s is None else data.grace_s
    row, token = await svc.store.rotate_key(key_id, grace)
    await svc.resolver.invalidate(key_id)
    return json({**key_view(row), "key": token, "previous_key_valid_for_s": grace})


# --- teams and orgs --------------------------------------------------------------------

def _group_handlers(kind: str) -> dict[str, Any]:
    model: type[OrgIn] = TeamIn if kind == "team" else OrgIn

    @require_master
    async def create(request: web.Request) -> web.Response:
        _, svc = _service(request)
        row = await svc.store.create_group(f"{kind}s", await _body(request, model))
        return json(group_view(row), status=201)

    @require_master
    async def list_(request: web.Request) -> web.Response:
        _, svc = _service(request)
        return json({"data": [group_view(r) for r in await svc.store.list_groups(kind)]})

    @require_master
    async def get(request: web.Request) -> web.Response:
        _, svc = _service(request)
        return json(group_view(await svc.store.get_group(kind, request.match_info["id"])))

    @require_master
    async def patch(request: web.Request) -> web.Response:
        _, svc = _service(request)
        row = await svc.store.update_group(kind, request.match_info["id"], await _body(request, GroupPatch))
        await svc.resolver.invalidate(None)  # its keys carry its limits and models
        return json(group_view(row))

    @require_master
    async def delete(request: web.Request) -> web.Response:
        _, svc = _service(request)
        await svc.store.delete_group(kind, request.match_info["id"])
        await svc.resolver.invalidate(None)
        return json({"id": request.match_info["id"], "deleted": True})

    return {"create": create, "list": list_, "get": get, "patch": patch, "delete": delete}


# --- credentials -----------------------------------------------------------------------

@require_master
async def create_credential(request: web.Request) -> web.Response:
    _, svc = _service(request)
    row = await svc.store.put_credential(await _body(request, CredentialIn))
    return json(credential_view(row), status=201)


@require_master
async def list_credentials(request: web.Request) -> web.Response:
    _, svc = _service(request)
    return json({"data": [credential_view(r) for r in await svc.store.list_credentials()]})


@require_master
async def get_credential(request: web.Request) -> web.Response:
    _, svc = _service(request)
    return json(credential_view(await svc.store.get_credential(request.match_info["id"])))


@require_master
async def patch_credential(request: web.Request) -> web.Response:
    gw, svc = _service(request)
    name = request.match_info["id"]
    data = await _body(request, CredentialPatch)
    row = await svc.store.set_credential_secret(name, data.secret, data.provider)
    await svc.credential_changed(gw, name)
    return json(credential_view(row))


@require_master
async def rotate_credential(request: web.Request) -> web.Response:
    """Same as PATCH with a required new `secret`."""
    gw, svc = _service(request)
    name = request.match_info["id"]
    data = await _body(request, CredentialPatch)
    if data.secret is None:
        raise GatewayError(400, "rotate needs the new 'secret'", "invalid_request_error", "invalid_body", "secret")
    row = await svc.store.set_credential_secret(name, data.secret, data.provider)
    await svc.credential_changed(gw, name)
    return json(credential_view(row))


@require_master
async def delete_credential(request: web.Request) -> web.Response:
    gw, svc = _service(request)
    name = request.match_info["id"]
    await svc.store.delete_credential(name)
    await svc.credential_changed(gw, name)
    return json({"name": name, "deleted": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/admin/keys", create_key)
    r.add_get("/admin/keys", list_keys)
    r.add_get("/admin/keys/{id}", get_key)
    r.add_patch("/admin/keys/{id}", patch_key)
    r.add_delete("/admin/keys/{id}", delete_key)
    r.add_post("/admin/keys/{id}/rotate", rotate_key)
    for kind in ("team", "org"):
        h = _group_handlers(kind)
        r.add_post(f"/admin/{kind}s", h["create"])
        r.add_get(f"/admin/{kind}s", h["list"])
        r.add_get(f"/admin/{kind}s/{{id}}", h["get"])
        r.add_patch(f"/admin/{kind}s/{{id}}", h["patch"])
        r.add_delete(f"/admin/{kind}s/{{id}}", h["delete"])
    r.add_post("/admin/credentials", create_credential)
    r.add_get("/admin/credentials", list_credentials)
    r.add_get("/admin/credentials/{id}", get_credential)
    r.add_patch("/admin/credentials/{id}", patch_credential)
    r.add_delete("/admin/credentials/{id}", delete_credential)
    r.add_post("/admin/credentials/{id}/rotate", rotate_credential)
