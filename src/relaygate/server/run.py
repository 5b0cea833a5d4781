"""Starting the server: uvloop, one or N worker processes sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from relaygate.config import ConfigError, load_config
from relaygate.config.models import GatewayConfig
from relaygate.server.app import build_app
from relaygate.server.bootstrap import build_gateway
from relaygate.server.front import FrontSite
from relaygate.server.gateway import Gateway

log = logging.getLogger("relaygate")
# A request leaves a few hundred short-lived containers; collecting the youngest generation
# every 700 allocations (CPython's default) ran it every dozen requests, and each full
# collection walked the whole cache. Measured with bench/profile.py (garbage-collection phase).
GC_THRESHOLDS = (20_000, 20, 50)


def ensure_master_key(cfg: GatewayConfig, state_dir: Path = Path(".relaygate")) -> str | None:
    """Without a configured master key, one is generated once and kept in
    `.relaygate/master_key` (0600), so a fresh `make run` is never open to the world."""
    from pydantic import SecretStr

    if cfg.server.master_key is not None:
        return None
    path = state_dir / "master_key"
    if path.exists():
        key = path.read_text().strip()
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        key = "sk-rg-master-" + secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    cfg.server.master_key = SecretStr(key)
    return str(path)


async def _serve(cfg: GatewayConfig, reuse_port: bool, config_path: Path | None) -> None:
    gw = await build_gateway(cfg)
    if config_path is not None:

        async def reload() -> list[str]:
            new = await asyncio.to_thread(load_config, config_path)
            routes = gw.reload(new)
            log.info("config reloaded from %s: %d routes", config_path, len(routes))
            return routes

        gw.services["reload"] = reload
    app = build_app(gw)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    # chat requests are framed by the lean front, everything else by aiohttp (server/front.py)
    site = FrontSite(runner, gw, cfg.server.host, cfg.server.port, reuse_port=reuse_port)
    await site.start()
    # Everything built so far (modules, config, pricing, pools) lives as long as the
    # process: moved out of the collector's reach, a full collection no longer walks it,
    # which takes tens of milliseconds off the requests that happen to trigger one.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if "reload" in gw.services:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload_quietly(gw)))
    log.info("relaygate listening on http://%s:%d (pid %d)", cfg.server.host, cfg.server.port, os.getpid())
    await stop.wait()
    await runner.cleanup()  # the front's connections, aiohttp's, then the gateway (ledger flush)


async def _reload_quietly(gw: Gateway) -> None:
    try:
        await gw.services["reload"]()
    except ConfigError as exc:
        log.error("config reload refused: %s", "; ".join(exc.problems))


def _run_loop(cfg: GatewayConfig, reuse_port: bool, config_path: Path | None) -> None:
    try:
        import uvloop

        uvloop.run(_serve(cfg, reuse_port, config_path))
    except ImportError:
        asyncio.run(_serve(cfg, reuse_port, config_path))


def serve(cfg: GatewayConfig, workers: int = 1, config_path: Path | None = None) -> None:
    if workers <= 1:
        _run_loop(cfg, reuse_port=False, config_path=config_path)
        return
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _run_loop(cfg, reuse_port=True, config_path=config_path)
            finally:
                logging.shutdown()  # os._exit skips atexit: the log writer's last lines first
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or (code >> 8)
    sys.exit(status)
