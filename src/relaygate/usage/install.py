"""Wires cost and usage into a gateway: the pricing service (`services["pricing"]`), the
cost stage (last, so it prices first of all `on_complete`s), the ledger stage (before
`auth`, so refusals get records too) with its journal and flusher, the admin query
endpoint, access logs, traces, webhooks and alerts."""

from __future__ import annotations

import logging

from relaygate.observability.logs import register_secrets
from relaygate.server.gateway import Gateway
from relaygate.usage.admin import add_routes
from relaygate.usage.alerts import AlertMonitor, UsageEvents, WebhookSender
from relaygate.usage.cost import CostStage
from relaygate.usage.journal import Journal
from relaygate.usage.ledger import Ledger, LedgerStage, RecordObserver, access_log
from relaygate.usage.pricing import Pricing
from relaygate.usage.store import LedgerStore

log = logging.getLogger("relaygate.usage")


async def install(gw: Gateway) -> None:
    cfg = gw.cfg
    pricing = Pricing(cfg.pricing)
    gw.services["pricing"] = pricing
    gw.add_stage(CostStage(cfg, pricing))
    register_secrets(gw.secrets())

    webhooks = WebhookSender(cfg.alerts, gw.metrics)
    gw.services["webhooks"] = webhooks
    gw.on_close(webhooks.close)

    observers: list[RecordObserver] = []
    if cfg.usage.access_log:
        observers.append(access_log)
    if cfg.usage.tracing.enabled:
        from relaygate.observability.tracing import RequestTracer

        tracer = RequestTracer.create(cfg.usage.tracing)
        if tracer is not None:
            observers.append(tracer.observe)
            gw.on_close(tracer.close)

    store: LedgerStore | None = None
    ledger: Ledger | None = None
    db = gw.services.get("db")
    if db is None:
        log.warning("no database service: usage records are not kept")
    else:
        store = LedgerStore(db)
        ledger = Ledger(store, Journal(cfg.state.journal_dir, cfg.usage.segment_max_bytes), cfg.usage, gw.metrics)
        await ledger.start()
        gw.services["ledger"] = ledger
        # registered after the database's closer, so it runs before it (closers run in reverse)
        gw.on_close(ledger.close)

    monitor = AlertMonitor(cfg.alerts, webhooks, store)
    observers.append(monitor.observe)
    events = UsageEvents(cfg.alerts, webhooks)
    if events.enabled:
        observers.append(events.observe)
        gw.on_close(events.close)
    await monitor.start()
    gw.on_close(monitor.close)
    gw.services["alerts"] = monitor

    gw.add_stage(LedgerStage(cfg, ledger, observers), before="auth")
    if store is not None:
        gw.admin_routes.append(add_routes)
