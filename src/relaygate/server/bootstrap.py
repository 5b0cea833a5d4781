"""Builds a `Gateway` from config with every installed stage wired in (the state layer,
keys, limits, cache, accounting). Each feature module offers `install(gateway)`."""

from __future__ import annotations

import importlib

from relaygate.config.models import GatewayConfig
from relaygate.server.gateway import Gateway

# Feature modules, in pipeline order; each has `async def install(gw: Gateway) -> None`.
# Resulting stage order: metrics, ledger, auth, route, cache, limits, cost
# (`on_complete` runs in reverse: cost is priced before limits settle budgets, and the
# ledger row is written after everything else is known).
FEATURES: list[str] = [
    "relaygate.state.install",
    "relaygate.keys.install",
    "relaygate.cache.install",
    "relaygate.limits.install",
    "relaygate.usage.install",
]


async def build_gateway(cfg: GatewayConfig) -> Gateway:
    gw = Gateway(cfg)
    for name in FEATURES:
        await importlib.import_module(name).install(gw)
    return gw
