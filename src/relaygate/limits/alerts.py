"""Budget alerts at 50/80/100 % (`alerts.budget_thresholds`), off the hot path.

Each threshold fires once per budget period across every replica: the first settlement
that sees a budget past it wins an atomic flag (Redis `SET NX`, or the in-process store),
and only the winner sends. Delivery (signing, retries with backoff) is the webhook sender's
job (`gw.services["webhooks"]`, from `relaygate.usage`): event `budget.threshold`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

from relaygate.limits.counters import CounterStore
from relaygate.limits.stage import NANO, Held, Planned, describe
from relaygate.pipeline.context import RequestContext

log = logging.getLogger("relaygate.limits.alerts")
EVENT = "budget.threshold"
DEFAULT_THRESHOLDS = (50, 80, 100)


def thresholds_of(alerts: Any) -> tuple[int, ...]:
    """`alerts.budget_thresholds`, whether the section is a model or a plain mapping."""
    value = alerts.get("budget_thresholds") if isinstance(alerts, dict) else getattr(alerts, "budget_thresholds", None)
    return tuple(sorted(int(v) for v in value)) if value else DEFAULT_THRESHOLDS


class BudgetAlerts:
    def __init__(self, thresholds: tuple[int, ...], counters: CounterStore, services: dict[str, Any]) -> None:
        self.thresholds = thresholds
        self.counters = counters
        self.services = services  # the webhook sender is installed after the limits stage
        self._tasks: set[asyncio.Task[None]] = set()

    def _sender(self) -> Any:
        sender = self.services.get("webhooks")
        return sender if sender is not None and getattr(sender, "configured", True) else None

    def after_settle(self, ctx: RequestContext, held: Held) -> None:
        """The stage's settlement hook: checks thresholds in a background task."""
        if self._sender() is not None and any(x.kind == "budget" for x in held.planned):
            self._spawn(self._check(held))

    def budget_refused(self, x: Planned, spent: int) -> None:
        """A request did not fit the budget: as good as 100 % spent (with max-cost
        reservations the settled spend itself may never reach the budget exactly)."""
        if self._sender() is not None and 100 in self.thresholds:
            self._spawn(self._fire(x, spent, [100]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, held: Held) -> None:
        budgets = [x for x in held.planned if x.kind == "budget"]
        try:
            values = await self.counters.get([x.check.key for x in budgets])
        except Exception:
            log.warning("budget alert check failed: counters unreachable")
            return
        for x, spent in zip(budgets, values, strict=True):
            if x.check.limit > 0:
                crossed = [p for p in self.thresholds if spent * 100 >= x.check.limit * p]
                await self._fire(x, spent, crossed)

    async def _fire(self, x: Planned, spent: int, thresholds: list[int]) -> None:
        now = time.time()
        try:
            for pct in thresholds:
                # the first replica to see the crossing wins the flag; the others stay quiet
                if not await self.counters.first(f"alert:{x.check.key}:{pct}", x.window.reset_s(now) + 86400):
                    continue
                payload = {
                    "threshold_percent": pct, "level": x.ref.level, "id": x.ref.id, "subject": describe(x.ref),
                    "spent_usd": str((Decimal(spent) / NANO).normalize()),
                    "budget_usd": str(x.ref.limits.budget_usd), "period": x.ref.limits.budget_period,
                    "period_start": x.window.start, "period_end": x.window.end,
                }
                sender = self._sender()
                if sender is not None:
                    await sender.send_webhook(EVENT, payload)
        except Exception:
            log.exception("budget alert failed")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
