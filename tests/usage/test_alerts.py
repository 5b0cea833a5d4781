"""Webhooks (HMAC signature, retries with backoff, event filters), the error/fallback rate
alerts, the hourly spend anomaly, and batched `usage.request` events — against a real
HTTP receiver on a loopback socket."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relaygate.state.db import connect
from relaygate.usage.alerts import AlertMonitor, UsageEvents, WebhookSender, _Window, signature
from relaygate.usage.config import AlertsConfig
from relaygate.usage.record import AttemptUsage, UsageRecord
from relaygate.usage.store import LedgerStore
from tests.conftest import auth, gateway_client, make_config


class Receiver:
    """Records deliveries; answers 503 to the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(({k.lower(): v for k, v in request.headers.items()}, body))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=503)
        self.got.set()
        return web.Response(status=204)

    def delivered(self) -> list[dict[str, Any]]:
        return [orjson.loads(b) for h, b in self.calls[self.fail_first:]]


async def receiver(r: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    server = TestServer(app)
    await server.start_server()
    return server


def alerts(url: str, **kw: Any) -> AlertsConfig:
    hook = {"url": url, "secret": "s3cret", **kw.pop("hook", {})}
    return AlertsConfig.model_validate({"webhooks": [hook], "backoff_base_s": 0.01, **kw})


async def test_webhook_is_signed_and_retried_until_delivered() -> None:
    r = Receiver(fail_first=2)
    server = await receiver(r)
    sender = WebhookSender(alerts(str(server.make_url("/hook")), retries=3))
    try:
        await sender.send_webhook("budget.threshold", {"key_id": "k1", "percent": 80})
        await asyncio.wait_for(r.got.wait(), 5)
        assert len(r.calls) == 3
        headers, body = r.calls[-1]
        assert headers["x-relaygate-event"] == "budget.threshold"
        assert headers["x-relaygate-signature"] == signature("s3cret", headers["x-relaygate-timestamp"], body)
        assert signature("wrong", headers["x-relaygate-timestamp"], body) != headers["x-relaygate-signature"]
        event = orjson.loads(body)
        assert event["event"] == "budget.threshold" and event["data"] == {"key_id": "k1", "percent": 80}
    finally:
        await sender.close()
        await server.close()


async def test_webhook_gives_up_after_its_retries() -> None:
    r = Receiver(fail_first=100)
    server = await receiver(r)
    sender = WebhookSender(alerts(str(server.make_url("/hook")), retries=2))
    try:
        [task] = sender.emit("alert.error_rate", {"provider": "p"})
        assert await task is False
        assert len(r.calls) == 3
    finally:
        await sender.close()
        await server.close()


async def test_event_filters() -> None:
    cfg = AlertsConfig.model_validate({"webhooks": [
        {"url": "http://127.0.0.1:9/a"},
        {"url": "http://127.0.0.1:9/b", "events": ["budget.*"]},
        {"url": "http://127.0.0.1:9/c", "events": ["usage.request"]},
    ]})
    s = WebhookSender(cfg)
    assert [h.url[-1] for h in s.subscribed("budget.threshold")] == ["a", "b"]
    assert [h.url[-1] for h in s.subscribed("alert.spend_anomaly")] == ["a"]
    assert [h.url[-1] for h in s.subscribed("usage.request")] == ["c"]


def _rec(rid: str, statuses: list[tuple[str, int]], degraded: bool = False) -> UsageRecord:
    attempts = tuple(AttemptUsage(p, "m", s, 10.0) for p, s in statuses)
    served = next((p for p, s in reversed(statuses) if s < 400), None)
    return UsageRecord(rid, time.time(), 200 if served else 503, provider=served, attempts=len(attempts),
                       attempt_list=attempts, degraded=degraded)


async def test_error_and_fallback_rate_alerts_fire_once_per_cooldown() -> None:
    cfg = AlertsConfig.model_validate({"error_rate": {"threshold": 0.3, "min_requests": 10},
                                       "fallback_rate": {"threshold": 0.3, "min_requests": 10}})
    monitor = AlertMonitor(cfg, WebhookSender(cfg), None)
    for i in range(10):
        monitor.observe(_rec(f"ok{i}", [("a", 200)]))
    assert monitor.fired == []
    for i in range(10):
        monitor.observe(_rec(f"fb{i}", [("a", 503), ("b", 200)], degraded=True))
    events = [e for e, _ in monitor.fired]
    assert events.count("alert.error_rate") == 1 and events.count("alert.fallback_rate") == 1
    err = next(p for e, p in monitor.fired if e == "alert.error_rate")
    assert err["provider"] == "a" and err["rate"] > 0.3


def test_rate_window_counts_the_last_window_in_constant_memory() -> None:
    w = _Window()
    for i in range(100_000):  # 100 requests a second for 1,000 s, every tenth one bad
        w.add(1_000_000 + i / 100, i % 10 == 0, window_s=300)
        assert len(w.buckets) <= 102
    assert 30_000 <= w.total <= 30_300 and w.rate == pytest.approx(0.1, abs=0.001)
    w.add(1_000_000 + 1000 + 299, True, window_s=300)  # only the last second's events (+ up to 3 s) remain
    assert 100 < w.total <= 401 and 10 < w.bad <= 41
    w.add(1_000_000 + 5000, False, window_s=300)
    assert (w.total, w.bad, len(w.buckets)) == (1, 0, 1)


async def test_spend_anomaly_against_trailing_baseline(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path}/a.db")
    store = LedgerStore(db)
    await store.migrate()
    cfg = AlertsConfig.model_validate({"spend_anomaly": {"min_baseline_hours": 6, "min_spend_usd": 0.5}})
    monitor = AlertMonitor(cfg, WebhookSender(cfg), store)
    now = 1_800_000_000 + 1800.0  # the middle of an hour
    hour = int(now // 3600)
    # 12 trailing hours of $1.00 +- $0.10
    recs = [UsageRecord(f"h{i}", (hour - 12 + i) * 3600 + 60, 200, cost_nusd=(900_000_000 if i % 2 else
                                                                            1_100_000_000)) for i in range(12)]
    recs.append(UsageRecord("now1", hour * 3600 + 60, 200, cost_nusd=1_150_000_000))
    await store.insert(recs)
    assert await monitor.check_spend(now) is None  # $1.15 < mean 1.00 + 2 x 0.10
    await store.insert([UsageRecord("now2", hour * 3600 + 120, 200, cost_nusd=200_000_000)])
    fired = await monitor.check_spend(now)
    assert fired is not None and fired["spend_usd"] == 1.35 and fired["threshold_usd"] == 1.2
    assert await monitor.check_spend(now) is None  # once per hour
    await db.close()


async def test_spend_anomaly_needs_a_baseline(tmp_path: Path) -> None:
    db = await connect(f"sqlite:///{tmp_path}/a.db")
    store = LedgerStore(db)
    await store.migrate()
    cfg = AlertsConfig()
    monitor = AlertMonitor(cfg, WebhookSender(cfg), store)
    now = 1_800_000_000.0
    await store.insert([UsageRecord("x", now - 7200, 200, cost_nusd=10**9),
                        UsageRecord("y", now, 200, cost_nusd=10**12)])
    assert await monitor.check_spend(now) is None
    await db.close()


async def test_usage_events_batch_one_event_per_request() -> None:
    r = Receiver()
    server = await receiver(r)
    cfg = alerts(str(server.make_url("/hook")), hook={"events": ["usage.request"]},
                 usage_events={"batch_size": 3, "interval_s": 0.05})
    sender = WebhookSender(cfg)
    events = UsageEvents(cfg, sender)
    assert events.enabled
    try:
        for i in range(7):
            events.observe(UsageRecord(f"r{i}", time.time(), 200, cost_nusd=1))
        await asyncio.sleep(0.3)
        await sender.drain()
        batches = r.delivered()
        ids = [rec["request_id"] for b in batches for rec in b["data"]["records"]]
        assert sorted(ids) == [f"r{i}" for i in range(7)]
        assert max(b["data"]["count"] for b in batches) == 3
        assert batches[0]["data"]["records"][0]["cost_usd"] == "0.000000001"
    finally:
        await events.close()
        await sender.close()
        await server.close()


async def test_gateway_posts_usage_events_and_offers_the_webhook_service(tmp_path: Path) -> None:
    r = Receiver()
    server = await receiver(r)
    raw = {"alerts": {"webhooks": [{"url": str(server.make_url("/hook")), "secret": "x",
                                    "events": ["usage.request", "budget.*"]}],
                      "usage_events": {"interval_s": 0.05}}}
    try:
        async with gateway_client(make_config(raw, tmp_path)) as client:
            resp = await client.post("/v1/chat/completions", headers={**auth(), "x-relaygate-request-id": "ev-1"},
                                     json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status == 200
            await asyncio.wait_for(r.got.wait(), 5)
            from relaygate.server.gateway import GATEWAY

            gw = client.server.app[GATEWAY]
            await gw.services["webhooks"].send_webhook("budget.threshold", {"percent": 50})
            await gw.services["webhooks"].drain()
        kinds = [d["event"] for d in r.delivered()]
        assert "usage.request" in kinds and "budget.threshold" in kinds
        usage = next(d for d in r.delivered() if d["event"] == "usage.request")
        assert usage["data"]["records"][0]["request_id"] == "ev-1"
    finally:
        await server.close()
