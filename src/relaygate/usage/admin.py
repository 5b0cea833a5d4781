"""`GET /admin/usage?by=key|team|user|model|provider|day&since=...&until=...`: spend and
tokens per group, from the ledger (master key)."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime

from aiohttp import web

from relaygate.errors import GatewayError
from relaygate.server.admin import json, require_master
from relaygate.server.gateway import GATEWAY
from relaygate.usage.store import GROUP_COLUMNS, LedgerStore

_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(value: str, now: float | None = None) -> float:
    """`2026-11-01`, `2026-11-01T12:00:00+00:00`, epoch seconds, or an age (`7d`, `24h`)."""
    value = value.strip()
    m = _RELATIVE.match(value)
    if m:
        return (now if now is not None else time.time()) - int(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        raise ValueError(f"{value!r}: expected a date (2026-11-01), a datetime, or an age (7d, 24h)") from None


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_parameter", param)


@require_master
async def usage(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    q = request.query
    by = q.get("by", "key")
    if by not in GROUP_COLUMNS:
        raise _bad(f"by: expected one of {', '.join(GROUP_COLUMNS)}", "by")
    bounds: dict[str, float | None] = {}
    for name in ("since", "until"):
        raw = q.get(name)
        try:
            bounds[name] = parse_time(raw) if raw else None
        except ValueError as exc:
            raise _bad(f"{name}: {exc}", name) from None
    filters = {name: q[name] for name in ("key", "team", "user", "model", "provider", "org") if q.get(name)}
    try:
        limit = max(1, min(int(q.get("limit", "1000")), 100_000))
    except ValueError:
        raise _bad("limit: expected an integer", "limit") from None
    ledger = gw.services.get("ledger")
    if ledger is not None:
        await ledger.flush()  # this process's latest records are in the answer
    store = LedgerStore(gw.services["db"])
    rows = await store.spend(by, bounds["since"], bounds["until"], filters, limit)
    return json({"object": "list", "by": by, "since": bounds["since"], "until": bounds["until"],
                 "data": [r.as_dict(by) for r in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/usage", usage)
