"""`Idempotency-Key`: a retried request with the same key (scoped to the virtual key)
within `limits.idempotency_ttl_s` replays the first answer and is not charged again.

The first request claims the key atomically (Redis `SET NX`, or a dict in one process);
duplicates that arrive while it runs wait for its answer. A failed first attempt releases
the claim, so the retry runs for real. Reusing a key with a different body is refused."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from relaygate.errors import GatewayError
from relaygate.formats import openai as openai_fmt
from relaygate.formats.types import (
    ChatResponse,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from relaygate.pipeline.context import RequestContext, StreamBody

HEADER = "idempotency-key"
log = logging.getLogger("relaygate.limits")


@dataclass(frozen=True, slots=True)
class Claim:
    """`state`: claimed (ours to run), pending (another request runs it), done (`record`)."""

    state: str
    record: dict[str, Any] | None = None


class IdempotencyStore(Protocol):
    async def claim(self, key: str, owner: str, body_hash: str, pending_s: float) -> Claim: ...

    async def save(self, key: str, record: dict[str, Any], ttl_s: float) -> None: ...

    async def release(self, key: str, owner: str) -> None: ...


class MemoryIdempotency:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}

    async def claim(self, key: str, owner: str, body_hash: str, pending_s: float) -> Claim:
        now = time.time()
        item = self._items.get(key)
        if item is None or item[0] <= now:
            self._items[key] = (now + pending_s, {"state": "pending", "owner": owner, "body": body_hash})
            if len(self._items) > 100_000:
                for k in [k for k, (exp, _) in self._items.items() if exp <= now]:
                    del self._items[k]
            return Claim("claimed")
        record = item[1]
        return Claim("done", record) if record["state"] == "done" else Claim("pending", record)

    async def save(self, key: str, record: dict[str, Any], ttl_s: float) -> None:
        self._items[key] = (time.time() + ttl_s, record)

    async def release(self, key: str, owner: str) -> None:
        item = self._items.get(key)
        if item is not None and item[1].get("owner") == owner:
            del self._items[key]


_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['owner'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisIdempotency:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def k(key: str) -> str:
        return "{rg}:idem:" + key

    async def claim(self, key: str, owner: str, body_hash: str, pending_s: float) -> Claim:
        pending = orjson.dumps({"state": "pending", "owner": owner, "body": body_hash})
        if await self.redis.set(self.k(key), pending, nx=True, px=int(pending_s * 1000)):
            return Claim("claimed")
        raw = await self.redis.get(self.k(key))
        if raw is None:  # expired in between: try again
            return Claim("pending")
        record = orjson.loads(raw)
        return Claim("done", record) if record["state"] == "done" else Claim("pending", record)

    async def save(self, key: str, record: dict[str, Any], ttl_s: float) -> None:
        await self.redis.set(self.k(key), orjson.dumps(record), px=int(ttl_s * 1000))

    async def release(self, key: str, owner: str) -> None:
        await self._release(keys=[self.k(key)], args=[owner])


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def replay_events(resp: ChatResponse) -> list[StreamEvent]:
    events: list[StreamEvent] = [StreamStart(resp.id, resp.model)]
    if resp.text:
        events.append(TextDelta(resp.text))
    for i, call in enumerate(resp.tool_calls):
        events.append(ToolCallStart(i, call.id, call.name))
        events.append(ToolCallDelta(i, call.arguments))
    # a replay is not charged again, so its stream reports no new usage
    events.append(StreamEnd(resp.stop_reason, Usage()))
    return events


async def _nothing() -> AsyncIterator[list[StreamEvent]]:
    return
    yield []


class IdempotencyStage:
    name = "idempotency"

    def __init__(self, store: IdempotencyStore, ttl_s: float, pending_s: float, poll_s: float = 0.05) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.pending_s = pending_s
        self.poll_s = poll_s

    async def on_request(self, ctx: RequestContext) -> None:
        header = ctx.headers.get(HEADER)
        p = ctx.principal
        if not header or p is None:
            return
        if len(header) > 255:
            raise GatewayError(400, "Idempotency-Key: at most 255 characters", "invalid_request_error",
                               "invalid_header", "Idempotency-Key")
        key = f"{p.key_id}:{ctx.format}:{hashlib.sha256(header.encode()).hexdigest()}"
        digest = body_hash(ctx.body)
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + self.pending_s
        while True:
            try:
                claim = await self.store.claim(key, owner, digest, self.pending_s)
            except Exception as exc:  # like rate limits, idempotency fails open
                log.warning("idempotency store unreachable (%s): request %s runs without replay protection",
                            type(exc).__name__, ctx.request_id)
                return
            if claim.record is not None and claim.record.get("body") != digest:
                raise GatewayError(422, "this Idempotency-Key was used with a different request body",
                                   "invalid_request_error", "idempotency_key_reused", "Idempotency-Key")
            if claim.state == "claimed":
                ctx.state["idempotency"] = (key, owner, digest)
                return
            if claim.state == "done" and claim.record is not None:
                self._replay(ctx, claim.record)
                return
            if time.monotonic() > deadline:
                raise GatewayError(409, "a request with this Idempotency-Key is still in progress",
                                   "invalid_request_error", "idempotency_in_progress", "Idempotency-Key")
            await asyncio.sleep(self.poll_s)

    def _replay(self, ctx: RequestContext, record: dict[str, Any]) -> None:
        resp = openai_fmt.parse_response(record["response"])
        ctx.state["idempotent_replay"] = True
        ctx.response_headers["x-relaygate-idempotent-replay"] = "true"
        ctx.usage = Usage()  # the first answer was charged; this one is not
        if ctx.chat.stream:
            ctx.stream = StreamBody(replay_events(resp), _nothing(), lambda: None)
        else:
            ctx.response = resp

    async def on_complete(self, ctx: RequestContext) -> None:
        held = ctx.state.pop("idempotency", None)
        if held is None:
            return
        key, owner, digest = held
        try:
            if ctx.status == 200 and ctx.response is not None:
                model = ctx.response.model or (ctx.served.model if ctx.served else ctx.chat.model)
                record = {"state": "done", "owner": owner, "body": digest,
                          "response": openai_fmt.dump_response(ctx.response, model)}
                await self.store.save(key, record, self.ttl_s)
            else:
                await self.store.release(key, owner)
        except Exception as exc:  # the claim expires on its own; a retry then runs again
            log.warning("could not record the answer for an Idempotency-Key (%s)", type(exc).__name__)
