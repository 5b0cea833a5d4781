"""Wires limits and budgets into a gateway: the counter backend (Redis when configured,
else in-process), the limits stage, the idempotency stage, the reservation sweeper and
budget alerts."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from relaygate.limits.alerts import BudgetAlerts, thresholds_of
from relaygate.limits.counters import CounterStore, MemoryCounters, RedisCounters, open_redis
from relaygate.limits.idempotency import (
    IdempotencyStage,
    IdempotencyStore,
    MemoryIdempotency,
    RedisIdempotency,
)
from relaygate.limits.spend import SpendJournal
from relaygate.limits.stage import LimitsMetrics, LimitsStage, sweep_once
from relaygate.server.gateway import Gateway

log = logging.getLogger("relaygate.limits")
SWEEP_EVERY_S = 5.0


async def install(gw: Gateway) -> None:
    cfg = gw.cfg.limits
    redis = gw.services.get("redis")
    backend = cfg.backend if cfg.backend != "auto" else ("redis" if redis is not None else "memory")
    if backend == "redis" and redis is None:
        raise ValueError("limits.backend is redis but state.redis_url is not set")
    counters: CounterStore
    idem: IdempotencyStore
    own_redis = None
    journal: SpendJournal | None = None
    if backend == "redis":
        assert gw.cfg.state.redis_url is not None
        own_redis = open_redis(gw.cfg.state.redis_url)
        counters, idem = RedisCounters(own_redis), RedisIdempotency(own_redis)
    else:
        memory = MemoryCounters()
        counters, idem = memory, MemoryIdempotency()
        journal = SpendJournal(gw.services["db"])
        await journal.start(memory)
    metrics = LimitsMetrics(gw.metrics.registry)
    stage = LimitsStage(gw.cfg, counters, metrics, gw.services, gw.metrics.refusals)
    alerts = BudgetAlerts(thresholds_of(gw.cfg.alerts), counters, gw.services)
    stage.on_settled.append(alerts.after_settle)
    stage.on_budget_refused.append(alerts.budget_refused)
    if journal is not None:
        stage.on_settled.append(journal.after_settle)
    gw.services["budget_alerts"] = alerts
    gw.add_stage(stage)
    pending_s = gw.cfg.timeouts.total_ms / 1000 + 30
    gw.add_stage(IdempotencyStage(idem, cfg.idempotency_ttl_s, pending_s), before="route")
    gw.services["limits"] = stage

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                await sweep_once(counters, metrics)
            except Exception as exc:
                log.warning("reservation sweep failed: %s", type(exc).__name__)

    task = asyncio.get_running_loop().create_task(sweeper())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await alerts.close()
        if journal is not None:
            await journal.close()
        if own_redis is not None:
            await own_redis.aclose()

    gw.on_close(stop)
