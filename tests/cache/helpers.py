"""Shared bits of the cache tests: configs and request bodies."""

from __future__ import annotations

from typing import Any

from tests.conftest import MASTER, auth


def chat(text: str = "What is the capital of France?", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock", "messages": [{"role": "user", "content": text}], "temperature": 0}
    body.update(params)
    return body


def cache_headers(key: str = MASTER, control: str | None = None) -> dict[str, str]:
    h = auth(key)
    if control:
        h["x-relaygate-cache"] = control
    return h


async def new_org_key(client: Any, org: str, name: str) -> str:
    r = await client.post("/admin/orgs", json={"id": org, "name": org}, headers=auth())
    assert r.status in (200, 201, 409), await r.text()
    r = await client.post("/admin/keys", json={"name": name, "org": org}, headers=auth())
    assert r.status == 201, await r.text()
    return str((await r.json())["key"])
