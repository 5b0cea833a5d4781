"""Stage: which route serves this request. The model name is a route name, a
`provider/model` pair, or the client/key sends its own route config."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import orjson

from relaygate.config.loader import ConfigError, route_from_object
from relaygate.config.models import GatewayConfig, RouteConfig
from relaygate.errors import GatewayError
from relaygate.pipeline.context import RequestContext
from relaygate.routing.plan import Group, Leaf, compile_route

_REQUEST_PLANS = 256


class RouteStage:
    name = "route"

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.routes: dict[str, RouteConfig] = dict(cfg.routes)
        self.plans: dict[str, Group] = {name: compile_route(r) for name, r in cfg.routes.items()}
        self._dynamic: OrderedDict[bytes, tuple[RouteConfig, Group]] = OrderedDict()

    def _compile_object(self, obj: Any, cache_key: bytes) -> tuple[RouteConfig, Group]:
        hit = self._dynamic.get(cache_key)
        if hit is not None:
            self._dynamic.move_to_end(cache_key)
            return hit
        try:
            route = route_from_object(obj, self.cfg.providers)
        except ConfigError as exc:
            raise GatewayError(400, "invalid route config: " + "; ".join(exc.problems),
                               "invalid_request_error", "invalid_config", "x-relaygate-config") from None
        compiled = (route, compile_route(route))
        self._dynamic[cache_key] = compiled
        if len(self._dynamic) > _REQUEST_PLANS:
            self._dynamic.popitem(last=False)
        return compiled

    def resolve(self, ctx: RequestContext) -> tuple[str, RouteConfig | None, Group]:
        model = ctx.chat.model
        principal = ctx.principal
        header = ctx.headers.get("x-relaygate-config")
        if header:
            if principal is not None and not (principal.is_master or principal.allow_request_config):
                raise GatewayError(403, "this key may not send x-relaygate-config", "permission_error",
                                   "config_not_allowed")
            try:
                obj = orjson.loads(header)
            except orjson.JSONDecodeError:
                raise GatewayError(400, "x-relaygate-config: not valid JSON", "invalid_request_error",
                                   "invalid_config", "x-relaygate-config") from None
            route, plan = self._compile_object(obj, header.encode())
            return model, route, plan
        if principal is not None and principal.route_config is not None:
            route, plan = self._compile_object(principal.route_config, b"key:" + principal.key_id.encode())
            return model, route, plan
        plan_ = self.plans.get(model)
        if plan_ is not None:
            return model, self.routes[model], plan_
        provider, sep, upstream_model = model.partition("/")
        if sep and self.cfg.server.direct_provider_models and provider in self.cfg.providers and upstream_model:
            return model, None, Group("single", (Leaf(provider, upstream_model),), (1.0,), frozenset())
        raise GatewayError(404, f"The model '{model}' does not exist (no route of that name)",
                           "not_found_error", "model_not_found", "model")

    async def on_request(self, ctx: RequestContext) -> None:
        name, route, plan = self.resolve(ctx)
        principal = ctx.principal
        if principal is not None and principal.models is not None and name not in principal.models:
            raise GatewayError(403, f"this key is not allowed to use model '{name}'", "permission_error",
                               "model_not_allowed", "model")
        ctx.route_name = name
        ctx.plan = plan
        ctx.state["route"] = route

    async def on_complete(self, ctx: RequestContext) -> None:
        return None


def complexity(ctx: RequestContext) -> float:
    """A 0..1 score for conditional routing: prompt size, tools, images, history."""
    chars = sum(len(getattr(p, "text", "") or "") for m in ctx.chat.messages for p in m.content)
    score = min(1.0, math.log10(1 + chars) / 5)
    if ctx.chat.tools:
        score = min(1.0, score + 0.2)
    if len(ctx.chat.messages) > 10:
        score = min(1.0, score + 0.1)
    return round(score, 3)


def routing_facts(ctx: RequestContext) -> dict[str, Any]:
    p = ctx.principal
    return {
        "model": ctx.chat.model,
        "metadata": ctx.metadata,
        "key": {"name": p.key_name, "team": p.team, "org": p.org, "user": p.user} if p else {},
        "user": ctx.metadata.get("user") or (p.user if p else None),
        "complexity": complexity(ctx),
        "stream": ctx.chat.stream,
    }
