"""Wires virtual keys into a gateway: migrations, the key resolver (after the config keys),
the credential lookup for route targets, the admin routes, and cross-replica invalidation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from relaygate.keys.admin import KeysService, add_routes
from relaygate.keys.resolver import CHANNEL, VirtualKeys, listen
from relaygate.keys.store import KeyStore
from relaygate.keys.tokens import SecretBox
from relaygate.server.gateway import Gateway


async def install(gw: Gateway) -> None:
    store = KeyStore(gw.services["db"], SecretBox.from_env())
    await store.migrate()
    redis = gw.services.get("redis")
    publish: Callable[[str], Awaitable[None]] | None = None
    if redis is not None:
        async def publish(message: str) -> None:
            await redis.publish(CHANNEL, message)

    resolver = VirtualKeys(store, gw.cfg, publish)
    gw.resolvers.append(resolver)
    gw.registry.credentials = store.credential_secret
    gw.services["keys"] = KeysService(store, resolver, gw.cfg.limits.rotation_grace_s)
    gw.admin_routes.append(add_routes)

    if redis is not None:
        def on_message(message: str) -> None:
            kind, _, ident = message.partition(":")
            if kind == "key":
                resolver.forget_local(None if ident == "*" else ident)
            elif kind == "cred":
                gw.registry.forget(ident)

        task: asyncio.Task[None] | None = None

        def start() -> None:
            nonlocal task
            if task is None:
                task = asyncio.get_running_loop().create_task(listen(redis, on_message))

        start()

        async def stop() -> None:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

        gw.on_close(stop)
