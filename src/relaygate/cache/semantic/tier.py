"""The semantic tier: embed the last user question, search the context's vectors, check
entities, serve the best match above the route's threshold.

Sharing across replicas: each entry is a Redis hash (vector, answer, metadata) with the
entry's TTL, and every change (add, remove, purge) is appended to one Redis stream. A
replica loads the existing hashes at start, then tails the stream (XREAD, blocking up to
`sync_interval_s`), so an answer stored by one replica is served by the others within
about a round trip. Without Redis the index is per process."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis

from relaygate.cache.entry import CachedAnswer
from relaygate.cache.semantic.embedder import MiniLMEmbedder
from relaygate.cache.semantic.entities import agree
from relaygate.cache.semantic.index import SemanticEntry, VectorIndex
from relaygate.cache.stage import SemanticMatch
from relaygate.cache.store import tag

log = logging.getLogger("relaygate.cache")

_STREAM_MAXLEN = 100_000


class SemanticCache:
    def __init__(self, embedder: MiniLMEmbedder, index: VectorIndex, redis: aioredis.Redis | None = None,
                 entity_check: bool = True, sync_interval_s: float = 1.0, prefix: str = "rg:cache:s:") -> None:
        self.embedder = embedder
        self.index = index
        self.redis = redis
        self.entity_check = entity_check
        self.sync_interval_s = sync_interval_s
        self.prefix = prefix
        self.stream = prefix + "log"
        self.origin = uuid.uuid4().hex
        # one embedding at a time: requests queue instead of fighting over two cores
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="relaygate-embed")
        self._sync: asyncio.Task[None] | None = None
        self._last_id = "0-0"
        self.rejected_by_entities = 0

    # --- embedding ------------------------------------------------------------------------

    async def embed(self, text: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.embedder.embed, text)

    # --- the tier interface ---------------------------------------------------------------

    async def lookup(self, context: str, tenant: str, route: str, text: str,
                     threshold: float) -> SemanticMatch | None:
        vector = await self.embed(text)
        for score, entry in self.index.search(context, vector, threshold):
            if entry.tenant != tenant or entry.route != route:
                continue  # the context hash covers both; checked again all the same
            if self.entity_check and not agree(text, entry.text):
                self.rejected_by_entities += 1
                log.debug("semantic candidate %s (similarity %.4f) rejected: entities differ (%r vs %r)",
                          entry.id, score, text, entry.text)
                continue
            return SemanticMatch(entry.answer, score, entry.id)
        return None

    async def store(self, context: str, tenant: str, route: str, text: str, answer: CachedAnswer,
                    ttl_s: int) -> None:
        vector = await self.embed(text)
        entry = SemanticEntry(uuid.uuid4().hex, context, tenant, route, text, vector, answer, time.time() + ttl_s)
        self.index.add(entry)
        if self.redis is None:
            return
        name = self._name(entry.tenant, entry.route, entry.id)
        meta = {"context": context, "tenant": tenant, "route": route, "text": text, "expires_at": entry.expires_at}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={"meta": orjson.dumps(meta), "vector": vector.astype(np.float32).tobytes(),
                                     "answer": answer.to_bytes()})
            pipe.expire(name, ttl_s)
            pipe.xadd(self.stream, {"op": "add", "name": name, "origin": self.origin},
                      maxlen=_STREAM_MAXLEN, approximate=True)
            await pipe.execute()

    async def remove(self, entry_id: str) -> None:
        entry = self.index.entries.get(entry_id)
        self.index.remove(entry_id)
        if self.redis is None:
            return
        if entry is not None:
            await self.redis.delete(self._name(entry.tenant, entry.route, entry_id))
        else:
            async for name in self.redis.scan_iter(match=f"{self.prefix}e:*:*:{entry_id}", count=500):
                await self.redis.delete(name)
        await self.redis.xadd(self.stream, {"op": "del", "id": entry_id, "origin": self.origin},
                              maxlen=_STREAM_MAXLEN, approximate=True)

    async def purge(self, tenant: str | None = None, route: str | None = None) -> int:
        removed = self.index.purge(tenant, route)
        if self.redis is None:
            return removed
        pattern = f"{self.prefix}e:{tag(tenant) if tenant else '*'}:{tag(route) if route else '*'}:*"
        shared = 0
        async for name in self.redis.scan_iter(match=pattern, count=500):
            shared += int(await self.redis.unlink(name))
        await self.redis.xadd(self.stream, {"op": "purge", "tenant": tenant or "", "route": route or "",
                                            "origin": self.origin}, maxlen=_STREAM_MAXLEN, approximate=True)
        return max(removed, shared)

    def entries(self) -> int:
        return len(self.index)

    # --- replica sync ---------------------------------------------------------------------

    def _name(self, tenant: str, route: str, entry_id: str) -> str:
        return f"{self.prefix}e:{tag(tenant)}:{tag(route)}:{entry_id}"

    async def start(self) -> None:
        """Loads the shared entries and starts following the change stream."""
        if self.redis is None:
            return
        try:
            last = await self.redis.xrevrange(self.stream, count=1)
            self._last_id = _text(last[0][0]) if last else "0-0"
            loaded = 0
            async for name in self.redis.scan_iter(match=f"{self.prefix}e:*", count=500):
                loaded += await self._load(_text(name))
            log.info("semantic cache: %d shared entries loaded from Redis", loaded)
        except Exception as exc:  # Redis down at start: follow the stream once it is back
            log.warning("semantic cache: could not load shared entries from Redis (%s)", exc)
        self._sync = asyncio.get_running_loop().create_task(self._follow())

    async def _load(self, name: str) -> int:
        assert self.redis is not None
        raw: dict[Any, Any] = await self.redis.hgetall(name)
        fields = {_text(k): v for k, v in raw.items()}
        if not fields:
            return 0
        try:
            meta = orjson.loads(fields["meta"])
            answer = CachedAnswer.from_bytes(bytes(fields["answer"]))
            vector = np.frombuffer(bytes(fields["vector"]), dtype=np.float32).copy()
        except (KeyError, orjson.JSONDecodeError, ValueError):
            return 0
        if answer is None or meta["expires_at"] <= time.time():
            return 0
        entry_id = name.rsplit(":", 1)[-1]
        self.index.add(SemanticEntry(entry_id, meta["context"], meta["tenant"], meta["route"], meta["text"],
                                     vector, answer, meta["expires_at"]))
        return 1

    async def _follow(self) -> None:
        assert self.redis is not None
        block_ms = max(1, int(self.sync_interval_s * 1000))
        while True:
            try:
                batches: Any = await self.redis.xread({self.stream: self._last_id}, count=500, block=block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("semantic cache sync: %s (retrying)", exc)
                await asyncio.sleep(self.sync_interval_s)
                continue
            for _, events in batches or []:
                for event_id, raw in events:
                    self._last_id = _text(event_id)
                    await self._apply({_text(k): _text(v) for k, v in raw.items()})

    async def _apply(self, event: dict[str, str]) -> None:
        if event.get("origin") == self.origin:
            return
        op = event.get("op")
        if op == "add":
            await self._load(event["name"])
        elif op == "del":
            self.index.remove(event["id"])
        elif op == "purge":
            self.index.purge(event.get("tenant") or None, event.get("route") or None)

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            try:
                await self._sync
            except (asyncio.CancelledError, Exception):
                pass
        self._pool.shutdown(wait=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
