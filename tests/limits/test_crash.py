"""A gateway process killed mid-request leaves a reservation nobody reconciles: another
replica's sweeper refunds it once it expires and reports it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import yaml

from relaygate.limits.windows import rate_window
from tests.e2e import procs
from tests.limits.helpers import away_from_window_edge


def start(config: dict[str, Any], tmp_path: Path) -> tuple[Any, str]:
    port = procs.free_port()
    cfg = {**config, "server": {"master_key": procs.MASTER, "port": port}}
    path = tmp_path / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cm = procs.process([*procs.RELAYGATE, "serve", "--config", str(path)], f"http://127.0.0.1:{port}/health",
                       cwd=tmp_path, log=tmp_path / f"gateway-{port}.log")
    return cm, f"http://127.0.0.1:{port}"


async def test_killed_replica_reservation_is_refunded(tmp_path: Path, redis_url: str) -> None:
    config = {"state": {"database_url": f"sqlite:///{tmp_path}/rg.db", "redis_url": redis_url,
                        "journal_dir": str(tmp_path / "journal")},
              "providers": {"mock": {"type": "mock"}},
              "routes": {"mock": {"targets": [{"provider": "mock", "model": "slow-20000"}]}},
              "limits": {"reservation_ttl_s": 1}}
    cm_a, a = start(config, tmp_path)
    cm_b, b = start(config, tmp_path)
    redis: Any = aioredis.Redis.from_url(redis_url)
    with cm_a as proc_a, cm_b:
        async with httpx.AsyncClient() as admin:
            made = await admin.post(f"{a}/admin/keys", json={"name": "k", "tpm": 100_000},
                                    headers={"authorization": f"Bearer {procs.MASTER}"})
        key, key_id = made.json()["key"], made.json()["id"]
        # the refund comes from B's sweeper within ttl (1 s) + its period (5 s): the window
        # must not roll over meanwhile (its counter key expiring would read as a refund)
        await away_from_window_edge(margin_s=20)
        counter = f"{{rg}}:tpm:key:{key_id}:{rate_window('tpm', time.time()).tag}"
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
        async with httpx.AsyncClient(timeout=30) as client:
            pending = asyncio.create_task(client.post(f"{a}/v1/chat/completions", json=body,
                                                      headers={"authorization": f"Bearer {key}"}))
            for _ in range(100):
                if int(await redis.get(counter) or 0) > 5000:
                    break
                await asyncio.sleep(0.02)
            assert int(await redis.get(counter) or 0) > 5000
            proc_a.kill()  # a crash: no on_complete, no settlement
            with contextlib.suppress(httpx.HTTPError):
                await pending
        deadline = time.monotonic() + 12
        metrics = ""
        async with httpx.AsyncClient() as reader:
            while time.monotonic() < deadline:
                metrics = (await reader.get(f"{b}/metrics")).text
                if "relaygate_limits_reservations_expired_total 1.0" in metrics:
                    break
                await asyncio.sleep(0.2)
        assert "relaygate_limits_reservations_expired_total 1.0" in metrics  # B's sweeper refunded it
        assert int(await redis.get(counter) or 0) == 0
    await redis.aclose()
