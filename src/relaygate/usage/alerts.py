"""Webhooks and alerts.

`WebhookSender` (in `gw.services["webhooks"]`) posts `{"event", "id", "created", "data"}`
to every configured webhook that wants the event, signed with HMAC-SHA256 and retried with
exponential backoff. Other stages call `send_webhook(event, payload)` (budget alerts).

`AlertMonitor` watches usage records: per-provider error and fallback rates over a sliding
window, and (from the ledger, so every replica's spend counts) the current hour's spend
against mean + `sigma` standard deviations of its trailing hours.

`UsageEvents` posts one `usage.request` event per request, batched, to the webhooks that
ask for it (external billing).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from relaygate.observability.metrics import GatewayMetrics
from relaygate.usage.config import AlertsConfig, RateAlertConfig, Webhook
from relaygate.usage.record import UsageRecord
from relaygate.usage.store import LedgerStore

log = logging.getLogger("relaygate.alerts")
USAGE_EVENT = "usage.request"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body) — the timestamp is
    signed so a captured delivery cannot be replayed later with a fresh one."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def wants(hook: Webhook, event: str) -> bool:
    if hook.events is None:
        return event != USAGE_EVENT
    for pattern in hook.events:
        if pattern == event or pattern == "*" or (pattern.endswith(".*") and event.startswith(pattern[:-1])):
            return True
    return False


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class WebhookSender:
    def __init__(self, cfg: AlertsConfig, metrics: GatewayMetrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[bool]] = set()

    @property
    def configured(self) -> bool:
        return bool(self.cfg.webhooks)

    def subscribed(self, event: str) -> list[Webhook]:
        return [h for h in self.cfg.webhooks if wants(h, event)]

    async def send_webhook(self, event: str, payload: dict[str, Any]) -> None:
        """Queues the event for every webhook that wants it and returns at once; delivery
        (with retries) happens in the background."""
        self.emit(event, payload)

    def emit(self, event: str, payload: dict[str, Any]) -> list[asyncio.Task[bool]]:
        hooks = self.subscribed(event)
        if not hooks:
            return []
        body = orjson.dumps({"event": event, "id": os.urandom(12).hex(), "created": round(time.time(), 3),
                             "data": payload}, default=_default)
        tasks = []
        for hook in hooks:
            task = asyncio.get_running_loop().create_task(self.deliver(hook, event, body))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            tasks.append(task)
        return tasks

    async def deliver(self, hook: Webhook, event: str, body: bytes) -> bool:
        """POSTs until a 2xx, at most 1 + `retries` times, backing off exponentially."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                delay = self.cfg.backoff_base_s * (2 ** (attempt - 1))
                await asyncio.sleep(delay * (1 + random.uniform(-0.2, 0.2)))
            ts = str(int(time.time()))
            headers = {"content-type": "application/json", "x-relaygate-event": event,
                       "x-relaygate-timestamp": ts, "user-agent": "relaygate-webhook"}
            if hook.secret:
                headers["x-relaygate-signature"] = signature(hook.secret, ts, body)
            try:
                async with self._session.post(hook.url, data=body, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self._count(event, "delivered")
                        return True
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
        self._count(event, "failed")
        log.warning("webhook %s for %s failed after %d tries: %s", event, _host(hook.url),
                    self.cfg.retries + 1, last)
        return False

    def _count(self, event: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_sent.labels(event, outcome).inc()

    async def drain(self, timeout: float = 10.0) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    async def close(self) -> None:
        await self.drain()
        for task in list(self._pending):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _host(url: str) -> str:
    return url.split("?", 1)[0]


_BUCKETS = 100  # per window: the rate is over the last `window_s` plus at most 1 % of it


@dataclass(slots=True)
class _Window:
    """Outcomes of the last `window_s` seconds for one provider, counted in buckets of
    1 % of the window: memory and work per request stay constant whatever the rate. (One
    entry per request meant 600,000 tuples per window at 2,000 req/s over the default
    300 s, and the collector walked each of them once.)"""

    buckets: deque[list[int]] = field(default_factory=deque)  # [bucket number, requests, bad]
    total: int = 0
    bad: int = 0
    last_alert: float = float("-inf")

    def add(self, now: float, bad: bool, window_s: float) -> None:
        width = window_s / _BUCKETS
        number = int(now // width)
        buckets = self.buckets
        if buckets and buckets[-1][0] == number:
            last = buckets[-1]
            last[1] += 1
            last[2] += bad
        else:
            buckets.append([number, 1, int(bad)])
        self.total += 1
        self.bad += bad
        oldest = number - _BUCKETS - 1  # this bucket and older ones ended before the window began
        while buckets[0][0] <= oldest:
            _, n, old_bad = buckets.popleft()
            self.total -= n
            self.bad -= old_bad

    @property
    def rate(self) -> float:
        return self.bad / self.total if self.total else 0.0


class AlertMonitor:
    def __init__(self, cfg: AlertsConfig, webhooks: WebhookSender, store: LedgerStore | None,
                 clock: Any = time.time) -> None:
        self.cfg = cfg
        self.webhooks = webhooks
        self.store = store
        self.clock = clock
        self.errors: dict[str, _Window] = {}
        self.fallbacks: dict[str, _Window] = {}
        self.alerted_hours: set[int] = set()
        self.fired: list[tuple[str, dict[str, Any]]] = []  # recent alerts, for /admin and tests
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.webhooks.configured and self.store is not None and self.cfg.spend_anomaly.enabled:
            self._task = asyncio.create_task(self._loop(), name="usage-spend-anomaly")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def observe(self, rec: UsageRecord) -> None:
        if not rec.attempt_list:
            return
        now = self.clock()
        for a in rec.attempt_list:
            if not a.skipped:
                self._rate("alert.error_rate", self.errors, a.provider, a.status >= 500 or a.status == 429,
                           self.cfg.error_rate, now)
        first = next((a for a in rec.attempt_list if not a.skipped), rec.attempt_list[0])
        if rec.provider is not None:
            self._rate("alert.fallback_rate", self.fallbacks, first.provider, rec.degraded,
                       self.cfg.fallback_rate, now)

    def _rate(self, event: str, windows: dict[str, _Window], provider: str, bad: bool,
              cfg: RateAlertConfig, now: float) -> None:
        if not cfg.enabled:
            return
        w = windows.setdefault(provider, _Window())
        w.add(now, bad, cfg.window_s)
        if (w.total >= cfg.min_requests and w.rate > cfg.threshold and now - w.last_alert >= cfg.cooldown_s):
            w.last_alert = now
            self._fire(event, {"provider": provider, "rate": round(w.rate, 4), "threshold": cfg.threshold,
                               "requests": w.total, "window_s": cfg.window_s})

    def _fire(self, event: str, payload: dict[str, Any]) -> None:
        self.fired.append((event, payload))
        del self.fired[:-100]
        log.warning("alert %s: %s", event, payload)
        try:
            self.webhooks.emit(event, payload)
        except RuntimeError:  # no running loop (a synchronous caller): recorded, not sent
            pass

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.check_interval_s)
            try:
                await self.check_spend()
            except Exception as exc:
                log.warning("spend anomaly check failed: %s", exc)

    async def check_spend(self, now: float | None = None) -> dict[str, Any] | None:
        """Fires `alert.spend_anomaly` when this hour's spend so far exceeds mean + sigma x
        standard deviation of the trailing hours (from the first hour with spend)."""
        if self.store is None:
            return None
        sa = self.cfg.spend_anomaly
        now = self.clock() if now is None else now
        hour = int(now // 3600)
        hourly = await self.store.hourly_spend((hour - sa.baseline_hours) * 3600)
        past = [h for h in hourly if h < hour]
        if not past:
            return None
        baseline = [hourly.get(h, 0) / 1e9 for h in range(min(past), hour)]
        if len(baseline) < sa.min_baseline_hours:
            return None
        current = hourly.get(hour, 0) / 1e9
        mean = statistics.fmean(baseline)
        std = statistics.pstdev(baseline)
        limit = mean + sa.sigma * std
        if current <= limit or current < sa.min_spend_usd or hour in self.alerted_hours:
            return None
        self.alerted_hours.add(hour)
        payload = {"hour": datetime.fromtimestamp(hour * 3600, UTC).isoformat(), "spend_usd": round(current, 9),
                   "baseline_mean_usd": round(mean, 9), "baseline_std_usd": round(std, 9),
                   "threshold_usd": round(limit, 9), "baseline_hours": len(baseline)}
        self._fire("alert.spend_anomaly", payload)
        return payload


class UsageEvents:
    """Batches `usage.request` events; at most `batch_size` per POST, every `interval_s`.
    Held in memory: the ledger, not this stream, is the record that survives a crash."""

    def __init__(self, cfg: AlertsConfig, webhooks: WebhookSender) -> None:
        self.cfg = cfg.usage_events
        self.webhooks = webhooks
        self.enabled = bool(webhooks.subscribed(USAGE_EVENT))
        self.buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def observe(self, rec: UsageRecord) -> None:
        self.buffer.append(rec.event())
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        if len(self.buffer) >= self.cfg.batch_size:
            self.flush()

    def flush(self) -> None:
        while self.buffer:
            batch, self.buffer = self.buffer[: self.cfg.batch_size], self.buffer[self.cfg.batch_size:]
            self.webhooks.emit(USAGE_EVENT, {"count": len(batch), "records": batch})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.flush()
