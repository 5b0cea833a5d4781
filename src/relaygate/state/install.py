"""Opens the database (and Redis when configured) for the other stages:
`gw.services["db"]` and `gw.services["redis"]`, with readiness checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygate.server.gateway import Gateway
from relaygate.state.db import connect

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def open_redis(url: str) -> aioredis.Redis:
    # redis-py imports OpenTelemetry, psutil and cryptography (~25 MB): only when configured
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


async def install(gw: Gateway) -> None:
    db = await connect(gw.cfg.state.database_url)
    gw.services["db"] = db
    gw.on_close(db.close)
    readiness = gw.services.setdefault("readiness", {})

    async def db_ok() -> None:
        await db.fetchrow("SELECT 1 AS ok")

    readiness["storage"] = db_ok
    if gw.cfg.state.redis_url:
        redis = open_redis(gw.cfg.state.redis_url)
        gw.services["redis"] = redis

        async def redis_ok() -> None:
            await redis.ping()

        readiness["redis"] = redis_ok
        gw.on_close(redis.aclose)
        from relaygate.state.redis_breakers import RedisBreakers

        gw.use_breakers(RedisBreakers(redis, gw.breaker_policy))
