"""Which request was answered by which cache entry, so a client can report a wrong answer
(`POST /admin/cache/feedback`), and the admin endpoints that act on the cache."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from relaygate.cache.store import StoreKey
from relaygate.errors import GatewayError
from relaygate.server.admin import json, require_master

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from relaygate.cache.stage import CacheStage

log = logging.getLogger("relaygate.cache")

_REMEMBERED = 10_000
_REDIS_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class HitRecord:
    tier: str  # exact | semantic
    route: str
    tenant: str
    entry: str  # the exact key's digest or the semantic entry id
    similarity: float | None = None


class HitLog:
    """The last hits by request id, in process and (when Redis is configured) in Redis so
    any replica can take the report."""

    def __init__(self, redis: aioredis.Redis | None = None, prefix: str = "rg:cache:hit:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._recent: OrderedDict[str, HitRecord] = OrderedDict()

    async def record(self, request_id: str, record: HitRecord) -> None:
        self._recent[request_id] = record
        if len(self._recent) > _REMEMBERED:
            self._recent.popitem(last=False)
        if self.redis is None:
            return
        try:
            await self.redis.set(self.prefix + request_id, orjson.dumps(asdict(record)), ex=_REDIS_TTL_S)
        except Exception as exc:
            log.warning("could not record cache hit %s in Redis: %s", request_id, exc)

    async def find(self, request_id: str) -> HitRecord | None:
        found = self._recent.get(request_id)
        if found is not None or self.redis is None:
            return found
        raw = await self.redis.get(self.prefix + request_id)
        return HitRecord(**orjson.loads(raw)) if raw else None


def _body_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise GatewayError(400, "body is not valid JSON", "invalid_request_error", "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "body must be a JSON object", "invalid_request_error", "invalid_body")
    return body


def admin_routes(stage: CacheStage) -> Any:
    """`add(app)` for `gw.admin_routes`."""

    @require_master
    async def purge(request: web.Request) -> web.Response:
        body = _body_object(await request.read())
        org, key_id, route = body.get("org"), body.get("key_id"), body.get("route")
        tenant = body.get("tenant") or (f"org:{org}" if org else f"key:{key_id}" if key_id else None)
        if tenant is None and route is None and body.get("all") is not True:
            raise GatewayError(400, "name what to purge: 'org', 'key_id', 'tenant' and/or 'route' "
                               "(or 'all': true)", "invalid_request_error", "missing_scope")
        exact = await stage.store.purge(tenant, route)
        semantic = await stage.semantic.purge(tenant, route) if stage.semantic is not None else 0
        stage.metrics.purged.labels("exact").inc(exact)
        stage.metrics.purged.labels("semantic").inc(semantic)
        stage.refresh_gauges()
        log.info("cache purge tenant=%s route=%s: %d exact, %d semantic entries", tenant, route, exact, semantic)
        return json({"purged": {"exact": exact, "semantic": semantic}, "tenant": tenant, "route": route})

    @require_master
    async def feedback(request: web.Request) -> web.Response:
        body = _body_object(await request.read())
        rid = body.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise GatewayError(400, "'request_id' (the x-relaygate-request-id of the answer) is required",
                               "invalid_request_error", "missing_request_id", "request_id")
        hit = await stage.hits.find(rid)
        if hit is None:
            raise GatewayError(404, f"request {rid} was not answered from the cache (or is too old)",
                               "not_found_error", "unknown_request")
        stage.metrics.false_hits.labels(hit.tier, stage.route_label(hit.route)).inc()
        invalidate = body.get("invalidate", True) is not False
        if invalidate:
            if hit.tier == "semantic" and stage.semantic is not None:
                await stage.semantic.remove(hit.entry)
            elif hit.tier == "exact":
                await stage.store.delete(StoreKey(hit.tenant, hit.route, hit.entry))
        log.warning("cache false hit reported: request %s tier=%s route=%s similarity=%s reason=%r "
                    "invalidated=%s", rid, hit.tier, hit.route, hit.similarity, body.get("reason"), invalidate)
        return json({"request_id": rid, "tier": hit.tier, "route": hit.route, "similarity": hit.similarity,
                     "invalidated": invalidate})

    def add(app: web.Application) -> None:
        app.router.add_post("/admin/cache/purge", purge)
        app.router.add_post("/admin/cache/feedback", feedback)

    return add
