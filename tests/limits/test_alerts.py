"""Budget alerts: 50/80/100 % each fired once per period (also when many requests cross a
threshold together), delivered through the gateway's webhook sender: signed, retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import auth, gateway_client, make_config

SECRET = "whsec-test"


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[dict[str, Any]] = []
        self.calls = 0
        self.fail_first = fail_first

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return web.Response(status=500)
        body = await request.read()
        signed = request.headers["x-relaygate-timestamp"].encode() + b"." + body
        assert request.headers["x-relaygate-signature"] == "sha256=" + hmac.new(SECRET.encode(), signed,
                                                                                hashlib.sha256).hexdigest()
        event = orjson.loads(body)
        assert event["event"] == "budget.threshold"
        self.got.append(event["data"])
        return web.Response(status=204)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_thresholds_fire_once_each(backend: str, tmp_path: Path, redis_url: str) -> None:
    receiver = Receiver(fail_first=1)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with TestServer(app) as hook_server:
        state = {"redis_url": redis_url} if backend == "redis" else {}
        hook = {"url": str(hook_server.make_url("/hook")), "secret": SECRET}
        raw = {"state": state, "alerts": {"webhooks": [hook], "backoff_base_s": 0.01},
               "pricing": {"models": {"mock-1": {"input_per_mtok": 1000, "output_per_mtok": 1000}}}}
        async with gateway_client(make_config(raw, tmp_path)) as client:
            made = await client.post("/admin/keys", json={"name": "b", "budget_usd": "1", "budget_period": "week"},
                                     headers=auth())
            key = (await made.json())["key"]
            body = {"model": "mock", "messages": [{"role": "user", "content": "REPLY_WORDS 100"}], "max_tokens": 100}

            async def send() -> int:
                resp = await client.post("/v1/chat/completions", json=body, headers=auth(key))
                return resp.status

            statuses = await asyncio.gather(*(send() for _ in range(20)))  # ~$0.104 each: crosses 50, 80, 100
            assert statuses.count(200) >= 9 and 429 in statuses
            for _ in range(100):
                if len(receiver.got) >= 3:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
    assert sorted(a["threshold_percent"] for a in receiver.got) == [50, 80, 100]
    assert {a["subject"] for a in receiver.got} == {f"key '{(await made.json())['id']}'"}
    assert all(a["period"] == "week" and a["budget_usd"] == "1" for a in receiver.got)
    assert receiver.calls == 4  # one failed delivery, retried
