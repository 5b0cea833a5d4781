"""Everything a running gateway holds, built once from the config (and rebuilt on reload)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relaygate.config.models import GatewayConfig
from relaygate.observability.metrics import GatewayMetrics, MetricsStage
from relaygate.observability.recent import RecentRequests
from relaygate.pipeline.auth import AuthStage, ConfigKeys, KeyResolver
from relaygate.pipeline.base import Pipeline, Stage
from relaygate.pipeline.call import CallStage
from relaygate.pipeline.route import RouteStage
from relaygate.providers.http import Deadlines, HttpTransport
from relaygate.providers.registry import ProviderRegistry
from relaygate.routing.breaker import BreakerPolicy, Breakers, MemoryBreakers
from relaygate.routing.engine import Router

# Extensions add stages and resolvers: fn(gateway) -> None, run at build time in order.
Extension = Callable[["Gateway"], Awaitable[None]]


class Gateway:
    def __init__(self, cfg: GatewayConfig, http: HttpTransport | None = None,
                 breakers: Breakers | None = None) -> None:
        self.cfg = cfg
        self.http = http or HttpTransport()
        cb = cfg.circuit_breaker
        self.breaker_policy = BreakerPolicy.from_config(cb, cfg.timeouts.total_ms / 1000)
        self.breakers: Breakers = breakers or MemoryBreakers(self.breaker_policy)
        self.registry = ProviderRegistry(cfg.providers, self.http)
        self.router = Router(self.breakers, cfg.retry, cfg.circuit_breaker)
        self.metrics = GatewayMetrics(set(cfg.routes))
        self.resolvers: list[KeyResolver] = [ConfigKeys(cfg)]
        self.route_stage = RouteStage(cfg)
        # Stage order (DESIGN §10); `on_complete` runs in reverse, so metrics sees all.
        self.recent = RecentRequests()
        self.stages: list[Stage] = [MetricsStage(self.metrics, self.after_answers), self.recent,
                                    AuthStage(self.resolvers), self.route_stage]
        self.call = CallStage(self.registry, self.router, Deadlines.from_config(cfg.timeouts))
        self.pipeline = Pipeline(self.stages, self.call)
        self.services: dict[str, Any] = {}
        # Features add admin endpoints here; wrap handlers with `server.admin.require_master`.
        self.admin_routes: list[Callable[[web.Application], None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def reload(self, cfg: GatewayConfig) -> list[str]:
        """Swaps in a new config's providers, routes, retry and timeouts without dropping
        a request (server, state and feature settings need a restart)."""
        self.cfg.providers = cfg.providers
        self.cfg.routes = cfg.routes
        self.cfg.retry = cfg.retry
        self.cfg.timeouts = cfg.timeouts
        self.registry.configs = cfg.providers
        self.registry.forget()
        route_stage = RouteStage(self.cfg)
        self.stages[self.stages.index(self.route_stage)] = route_stage
        self.route_stage = route_stage
        self.router.retry = cfg.retry
        self.router.retry_codes = frozenset(cfg.retry.on_status_codes)
        self.call.deadlines = Deadlines.from_config(cfg.timeouts)
        self.metrics.known_routes = set(cfg.routes)
        return sorted(cfg.routes)

    def use_breakers(self, breakers: Breakers) -> None:
        """Swaps the breaker store (Redis, when replicas must agree)."""
        self.breakers = breakers
        self.router.breakers = breakers

    def add_stage(self, stage: Stage, before: str | None = None) -> None:
        """Inserts a stage before the named one (or at the end)."""
        if before is None:
            self.stages.append(stage)
            return
        for i, s in enumerate(self.stages):
            if s.name == before:
                self.stages.insert(i, stage)
                return
        raise ValueError(f"no stage named {before!r}")

    def after_durable(self, fn: Callable[[], None]) -> None:
        """Runs `fn` (an answer's last write) once the records of the requests completed
        so far are in the usage journal (see usage.ledger): at once without a ledger."""
        ledger = self.services.get("ledger")
        if ledger is None:
            fn()
        else:
            ledger.after_durable(fn)

    def after_answers(self, fn: Callable[[], None]) -> None:
        """Runs `fn` once the answers finished so far are written: for the work a request
        does for later ones (cache stores, metrics, usage observers), kept off its own
        latency. In the same turn of the loop as those writes, so nothing the next request
        reads can miss it."""
        ledger = self.services.get("ledger")
        if ledger is None:
            asyncio.get_running_loop().call_soon(fn)
        else:
            ledger.after_answers(fn)

    async def durable(self) -> None:
        """`after_durable` for a writer that must be awaited (aiohttp's responses)."""
        ledger = self.services.get("ledger")
        if ledger is not None:
            await ledger.durable()

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    def secrets(self) -> list[str]:
        out = self.registry.all_secrets()
        if self.cfg.server.master_key:
            out.append(self.cfg.server.master_key.get_secret_value())
        for p in self.cfg.providers.values():
            if p.api_key:
                out.append(p.api_key.get_secret_value())
        return out

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        await self.http.close()


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
