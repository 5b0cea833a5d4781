"""Virtual keys end to end through the admin API and the data plane, on SQLite and
PostgreSQL: create, use, revoke, expire, rotate with grace, tenancy, credentials."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from relaygate.keys.tokens import SECRET_ENV
from tests.conftest import auth, gateway_client, make_config
from tests.limits.helpers import away_from_window_edge

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


def cfg(db_url: str, tmp_path: Path, **extra: Any) -> Any:
    raw: dict[str, Any] = {"state": {"database_url": db_url}, **extra}
    raw.setdefault("routes", {"mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
                              "mock-b": {"targets": [{"provider": "mock", "model": "mock-2"}]}})
    return make_config(raw, tmp_path)


async def admin(client: Any, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    resp = await client.request(method, path, json=body, headers=auth())
    data = await resp.json()
    assert resp.status == status, data
    return data


async def chat(client: Any, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    resp = await client.post("/v1/chat/completions", json=body or CHAT, headers=auth(key))
    return resp.status, await resp.json()


async def test_create_use_list_revoke(db_url: str, tmp_path: Path) -> None:
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        await admin(client, "POST", "/admin/orgs", {"name": "acme"}, 201)
        await admin(client, "POST", "/admin/teams", {"name": "search", "org": "acme"}, 201)
        created = await admin(client, "POST", "/admin/keys", {"name": "k1", "team": "search", "user": "ann"}, 201)
        token = created["key"]
        assert token.startswith("rg-") and len(token) > 40
        assert created["org"] == "acme" and created["team"] == "search"
        status, body = await chat(client, token)
        assert status == 200, body
        listing = await admin(client, "GET", "/admin/keys")
        assert [k["id"] for k in listing["data"]] == [created["id"]]
        assert token not in str(listing) and "hash" not in str(listing)
        shown = await admin(client, "GET", f"/admin/keys/{created['id']}")
        assert shown["key_prefix"] == token[:7] + "..." and "key" not in shown
        await admin(client, "DELETE", f"/admin/keys/{created['id']}")
        status, body = await chat(client, token)
        assert status == 401 and body["error"]["code"] == "key_revoked"
        models = await client.get("/v1/models", headers=auth(token))
        assert models.status == 401 and (await models.json())["error"]["code"] == "key_revoked"
        status, body = await chat(client, "rg-not-a-key")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"


async def test_expiry(db_url: str, tmp_path: Path) -> None:
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        old = await admin(client, "POST", "/admin/keys", {"name": "old", "expires_at": time.time() - 1}, 201)
        status, body = await chat(client, old["key"])
        assert status == 401 and body["error"]["code"] == "key_expired"
        soon = await admin(client, "POST", "/admin/keys", {"name": "soon", "expires_in_s": 1.0}, 201)
        assert (await chat(client, soon["key"]))[0] == 200
        await asyncio.sleep(1.1)
        status, body = await chat(client, soon["key"])  # still in the resolver cache: expiry is checked anyway
        assert status == 401 and body["error"]["code"] == "key_expired"


async def test_rotation_grace(db_url: str, tmp_path: Path) -> None:
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        k = await admin(client, "POST", "/admin/keys", {"name": "r"}, 201)
        rotated = await admin(client, "POST", f"/admin/keys/{k['id']}/rotate", {"grace_s": 3600})
        assert rotated["id"] == k["id"] and rotated["key"] != k["key"]
        assert (await chat(client, k["key"]))[0] == 200  # inside the grace window
        assert (await chat(client, rotated["key"]))[0] == 200
        again = await admin(client, "POST", f"/admin/keys/{k['id']}/rotate", {"grace_s": 0})
        for stale in (k["key"], rotated["key"]):
            status, body = await chat(client, stale)
            assert status == 401 and body["error"]["code"] == "key_rotated", body
        assert (await chat(client, again["key"]))[0] == 200


async def test_wrong_tenant_refused(db_url: str, tmp_path: Path) -> None:
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        await admin(client, "POST", "/admin/orgs", {"name": "a", "models": ["mock"]}, 201)
        await admin(client, "POST", "/admin/orgs", {"name": "b", "models": ["mock-b"]}, 201)
        key_b = (await admin(client, "POST", "/admin/keys", {"name": "kb", "org": "b"}, 201))["key"]
        status, body = await chat(client, key_b)  # org a's route
        assert status == 403 and body["error"]["code"] == "model_not_allowed"
        assert (await chat(client, key_b, {**CHAT, "model": "mock-b"}))[0] == 200
        # a key may narrow its org's routes, never widen them
        wide = (await admin(client, "POST", "/admin/keys", {"name": "w", "org": "b", "models": ["mock", "mock-b"]},
                            201))["key"]
        assert (await chat(client, wide))[0] == 403
        # a key cannot claim a team of another org
        await admin(client, "POST", "/admin/teams", {"name": "ta", "org": "a"}, 201)
        await admin(client, "POST", "/admin/keys", {"name": "x", "team": "ta", "org": "b"}, 400)


async def test_per_key_route_config(db_url: str, tmp_path: Path) -> None:
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        own = {"targets": [{"provider": "mock", "model": "mock-own"}]}
        k = await admin(client, "POST", "/admin/keys", {"name": "own", "config": own}, 201)
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth(k["key"]))
        assert resp.status == 200 and resp.headers["x-relaygate-model"] == "mock-own"
        r = await admin(client, "POST", "/admin/keys", {"name": "routed", "route": "mock-b"}, 201)
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth(r["key"]))
        assert resp.status == 200 and resp.headers["x-relaygate-model"] == "mock-2"


async def test_credentials_need_secret_key(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        err = await admin(client, "POST", "/admin/credentials", {"name": "c", "secret": "sk-xyz"}, 400)
        assert SECRET_ENV in err["error"]["message"]


async def test_credentials_write_only_and_rotated(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-key-0123456789")
    raw = {"routes": {"mock": {"targets": [{"provider": "mock", "model": "mock-1", "virtual_key": "upstream"}]}}}
    async with gateway_client(cfg(db_url, tmp_path, **raw)) as client:
        created = await admin(client, "POST", "/admin/credentials",
                              {"name": "upstream", "secret": "sk-upstream-SECRET-1", "provider": "mock"}, 201)
        assert "secret" not in created and "SECRET" not in str(created)
        listing = await admin(client, "GET", "/admin/credentials")
        assert "SECRET" not in str(listing) and listing["data"][0]["name"] == "upstream"
        status, body = await chat(client, "sk-test-master")
        assert status == 200, body
        from relaygate.server.gateway import GATEWAY

        gw = client.server.app[GATEWAY]
        assert await gw.registry.credentials("upstream") == "sk-upstream-SECRET-1"
        assert "sk-upstream-SECRET-1" in gw.registry.all_secrets()
        await admin(client, "POST", "/admin/credentials/upstream/rotate", {"secret": "sk-upstream-SECRET-2"})
        assert "sk-upstream-SECRET-1" not in gw.registry.all_secrets()  # adapter forgotten
        assert await gw.registry.credentials("upstream") == "sk-upstream-SECRET-2"
        await admin(client, "POST", "/admin/credentials", {"name": "upstream", "secret": "x"}, 409)


async def test_cross_replica_revocation_via_redis(tmp_path: Path, redis_url: str) -> None:
    """Two gateways share the database and Redis; the key cache TTL is long, so only the
    pub/sub invalidation can make replica B refuse a key revoked on replica A."""
    raw = {"state": {"database_url": f"sqlite:///{tmp_path}/shared.db", "redis_url": redis_url},
           "limits": {"key_cache_ttl_s": 300}}
    async with gateway_client(make_config(raw, tmp_path)) as a, gateway_client(make_config(raw, tmp_path)) as b:
        k = await admin(a, "POST", "/admin/keys", {"name": "shared"}, 201)
        assert (await chat(b, k["key"]))[0] == 200  # now cached in B
        await admin(a, "DELETE", f"/admin/keys/{k['id']}")
        for _ in range(50):
            status, _ = await chat(b, k["key"])
            if status == 401:
                break
            await asyncio.sleep(0.02)
        assert status == 401


async def test_teams_orgs_credentials_crud(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-key-0123456789")
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        await admin(client, "POST", "/admin/orgs", {"name": "o1", "tpm": 10}, 201)
        await admin(client, "POST", "/admin/orgs", {"name": "o1"}, 409)
        await admin(client, "POST", "/admin/teams", {"name": "t1", "org": "nope"}, 404)
        team = await admin(client, "POST", "/admin/teams", {"name": "t1", "org": "o1", "rpm": 5}, 201)
        assert team["org"] == "o1" and team["rpm"] == 5
        patched = await admin(client, "PATCH", "/admin/teams/t1", {"rpm": 7, "budget_usd": "12.5"})
        assert patched["rpm"] == 7 and patched["budget_usd"] == "12.5"
        assert [t["id"] for t in (await admin(client, "GET", "/admin/teams"))["data"]] == ["t1"]
        assert (await admin(client, "GET", "/admin/orgs/o1"))["tpm"] == 10
        k = await admin(client, "POST", "/admin/keys", {"name": "k", "team": "t1"}, 201)
        await admin(client, "DELETE", "/admin/teams/t1", status=409)  # live keys
        await admin(client, "DELETE", "/admin/orgs/o1", status=409)  # teams
        await admin(client, "DELETE", f"/admin/keys/{k['id']}")
        await admin(client, "DELETE", "/admin/teams/t1")
        await admin(client, "DELETE", "/admin/orgs/o1")
        await admin(client, "GET", "/admin/orgs/o1", status=404)
        err = await admin(client, "POST", "/admin/keys", {"name": "x", "rpm": -1}, 400)
        assert "rpm" in err["error"]["message"]
        await admin(client, "POST", "/admin/credentials", {"name": "c1", "secret": "s1"}, 201)
        await admin(client, "PATCH", "/admin/credentials/c1", {"secret": "s2"})
        await admin(client, "DELETE", "/admin/credentials/c1")
        await admin(client, "GET", "/admin/credentials/c1", status=404)
        resp = await client.get("/admin/keys", headers=auth("rg-not-master"))
        assert resp.status == 401


async def test_cross_replica_credential_rotation_via_redis(tmp_path: Path, redis_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-key-0123456789")
    from relaygate.server.gateway import GATEWAY

    raw = {"state": {"database_url": f"sqlite:///{tmp_path}/shared.db", "redis_url": redis_url},
           "routes": {"mock": {"targets": [{"provider": "mock", "model": "mock-1", "virtual_key": "up"}]}}}
    async with gateway_client(make_config(raw, tmp_path)) as a, gateway_client(make_config(raw, tmp_path)) as b:
        await admin(a, "POST", "/admin/credentials", {"name": "up", "secret": "sk-one-1111"}, 201)
        assert (await chat(b, "sk-test-master"))[0] == 200
        gw_b = b.server.app[GATEWAY]
        assert "sk-one-1111" in gw_b.registry.all_secrets()  # B built an adapter with it
        await admin(a, "POST", "/admin/credentials/up/rotate", {"secret": "sk-two-2222"})
        for _ in range(50):
            if "sk-one-1111" not in gw_b.registry.all_secrets():
                break
            await asyncio.sleep(0.02)
        assert "sk-one-1111" not in gw_b.registry.all_secrets()
        assert (await chat(b, "sk-test-master"))[0] == 200
        assert "sk-two-2222" in gw_b.registry.all_secrets()


async def test_without_redis_the_cache_ttl_bounds_a_revoked_key(tmp_path: Path) -> None:
    raw = {"state": {"database_url": f"sqlite:///{tmp_path}/shared.db"}, "limits": {"key_cache_ttl_s": 0.3}}
    async with gateway_client(make_config(raw, tmp_path)) as a, gateway_client(make_config(raw, tmp_path)) as b:
        k = await admin(a, "POST", "/admin/keys", {"name": "shared"}, 201)
        assert (await chat(b, k["key"]))[0] == 200
        await admin(a, "DELETE", f"/admin/keys/{k['id']}")
        assert (await chat(a, k["key"]))[0] == 401  # the replica that revoked: at once
        await asyncio.sleep(0.35)
        assert (await chat(b, k["key"]))[0] == 401  # another replica: within the TTL


async def test_anthropic_format_refusal(tmp_path: Path) -> None:
    await away_from_window_edge(margin_s=3)
    async with gateway_client(make_config({}, tmp_path)) as client:
        k = await admin(client, "POST", "/admin/keys", {"name": "a", "rpm": 1}, 201)
        body = {"model": "mock", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        first = await client.post("/v1/messages", json=body, headers={"x-api-key": k["key"]})
        assert first.status == 200 and first.headers["x-ratelimit-limit-requests"] == "1"
        second = await client.post("/v1/messages", json=body, headers={"x-api-key": k["key"]})
        data = await second.json()
        assert second.status == 429 and data["type"] == "error" and "retry-after" in second.headers
        assert data["error"]["type"] == "rate_limit_error" and "requests per minute" in data["error"]["message"]


async def test_concurrent_creates_of_one_id(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-key-0123456789")
    async with gateway_client(cfg(db_url, tmp_path)) as client:
        for path, body in (("/admin/orgs", {"name": "same"}), ("/admin/credentials", {"name": "same", "secret": "s"})):
            async def create(path: str = path, body: dict[str, Any] = body) -> int:
                resp = await client.post(path, json=body, headers=auth())
                return resp.status

            statuses = await asyncio.gather(*(create() for _ in range(20)))
            assert sorted(statuses) == [201] + [409] * 19, statuses
