"""The exact cache through the whole gateway (in process, real socket)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.cache.helpers import cache_headers, chat, new_org_key
from tests.conftest import auth, gateway_client, make_config


async def post(client: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    r = await client.post("/v1/chat/completions", json=body, headers=headers or auth())
    return r, await r.json()


async def test_second_identical_request_is_an_exact_hit(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        r1, b1 = await post(client, chat())
        assert r1.status == 200 and r1.headers["x-relaygate-cache"] == "miss"
        assert r1.headers["x-relaygate-attempts"] == "1"
        r2, b2 = await post(client, chat())
        assert r2.headers["x-relaygate-cache"] == "hit-exact"
        assert r2.headers["x-relaygate-attempts"] == "0"
        assert r2.headers["x-relaygate-provider"] == "mock"
        assert b2["choices"][0]["message"]["content"] == b1["choices"][0]["message"]["content"]
        assert b2["usage"] == b1["usage"]  # a hit reports the cached usage (limits count it)
        # the same question in the Anthropic format is the same request
        r3 = await client.post("/v1/messages", json={**chat(), "max_tokens": 64}, headers=auth())
        assert r3.headers["x-relaygate-cache"] == "miss"  # max_tokens differs: another request
        r4 = await client.post("/v1/messages", json={**chat(), "max_tokens": 64}, headers=auth())
        assert r4.headers["x-relaygate-cache"] == "hit-exact"
        assert (await r4.json())["content"][0]["text"] == (await r3.json())["content"][0]["text"]


async def test_nondeterministic_requests_bypass_unless_the_route_opts_in(tmp_path: Any) -> None:
    routes = {"creative": {"targets": [{"provider": "mock", "model": "mock-1"}],
                           "cache": {"allow_nondeterministic": True, "ttl_s": 60}}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as client:
        unset = chat()
        del unset["temperature"]  # unset = the provider default (1): not deterministic
        for body in (unset, chat(temperature=0.7), unset):
            r, _ = await post(client, body)
            assert r.headers["x-relaygate-cache"] == "bypass"
            assert r.headers["x-relaygate-attempts"] == "1"
        for expected in ("miss", "hit-exact"):
            r, _ = await post(client, chat(model="creative", temperature=0.9))
            assert r.headers["x-relaygate-cache"] == expected


async def test_no_cache_skips_the_read_and_refreshes_no_store_skips_the_write(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        r, _ = await post(client, chat("a"), cache_headers(control="no-store"))
        assert r.headers["x-relaygate-cache"] == "miss"
        r, _ = await post(client, chat("a"))
        assert r.headers["x-relaygate-cache"] == "miss"  # the no-store answer was not kept
        r, _ = await post(client, chat("a"), cache_headers(control="no-cache"))
        assert r.headers["x-relaygate-cache"] == "bypass"
        assert r.headers["x-relaygate-attempts"] == "1"
        r, _ = await post(client, chat("b"), cache_headers(control="no-cache"))
        assert r.headers["x-relaygate-cache"] == "bypass"
        r, _ = await post(client, chat("b"))
        assert r.headers["x-relaygate-cache"] == "hit-exact"  # no-cache still stored its answer
        r, _ = await post(client, chat("b"), cache_headers(control="no-store"))
        assert r.headers["x-relaygate-cache"] == "hit-exact"  # no-store may read


async def test_route_can_disable_the_cache_and_set_its_own_ttl(tmp_path: Any) -> None:
    routes = {"nocache": {"targets": [{"provider": "mock", "model": "mock-1"}], "cache": {"enabled": False}}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as client:
        for _ in range(2):
            r, _ = await post(client, chat(model="nocache"))
            assert r.headers["x-relaygate-cache"] == "bypass"


async def test_no_cross_tenant_hits(tmp_path: Any) -> None:
    """Keys of two orgs ask the same questions: nothing crosses; keys of one org share."""
    async with gateway_client(make_config({}, tmp_path)) as client:
        acme1 = await new_org_key(client, "acme", "acme-1")
        acme2 = await new_org_key(client, "acme", "acme-2")
        globex = await new_org_key(client, "globex", "globex-1")
        questions = [f"question {i}" for i in range(5)]
        for q in questions:
            r, _ = await post(client, chat(q), cache_headers(acme1))
            assert r.headers["x-relaygate-cache"] == "miss"
        for q in questions:
            r, _ = await post(client, chat(q), cache_headers(globex))
            assert r.headers["x-relaygate-cache"] == "miss", "globex was served acme's answer"
            r, _ = await post(client, chat(q), cache_headers(acme2))
            assert r.headers["x-relaygate-cache"] == "hit-exact"  # same org: shared


async def test_key_scope_keeps_each_key_apart(tmp_path: Any) -> None:
    async with gateway_client(make_config({"cache": {"scope": "key"}}, tmp_path)) as client:
        a = await new_org_key(client, "acme", "a")
        b = await new_org_key(client, "acme", "b")
        r, _ = await post(client, chat(), cache_headers(a))
        assert r.headers["x-relaygate-cache"] == "miss"
        r, _ = await post(client, chat(), cache_headers(b))
        assert r.headers["x-relaygate-cache"] == "miss"
        r, _ = await post(client, chat(), cache_headers(a))
        assert r.headers["x-relaygate-cache"] == "hit-exact"


async def test_single_flight_fifty_identical_misses_make_one_upstream_call(tmp_path: Any) -> None:
    routes = {"slow": {"targets": [{"provider": "mock", "model": "slow-200"}]}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as client:
        results = await asyncio.gather(*(post(client, chat("slow question", model="slow")) for _ in range(50)))
        attempts = sum(int(r.headers["x-relaygate-attempts"]) for r, _ in results)
        assert attempts == 1
        assert all(r.status == 200 for r, _ in results)
        texts = {b["choices"][0]["message"]["content"] for _, b in results}
        assert len(texts) == 1
        statuses = sorted(r.headers["x-relaygate-cache"] for r, _ in results)
        assert statuses.count("miss") == 1 and statuses.count("hit-exact") == 49
        metrics = await (await client.get("/metrics")).text()
        assert 'relaygate_upstream_attempts_total{model="slow-200",provider="mock",status="200"} 1.0' in metrics
        assert 'relaygate_cache_coalesced_total{route="slow"} 49.0' in metrics


async def test_purge_by_tenant_and_route(tmp_path: Any) -> None:
    routes = {"other": {"targets": [{"provider": "mock", "model": "mock-1"}]}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as client:
        acme = await new_org_key(client, "acme", "acme")
        globex = await new_org_key(client, "globex", "globex")
        for key in (acme, globex):
            for model in ("mock", "other"):
                await post(client, chat(model=model), cache_headers(key))
        r = await client.post("/admin/cache/purge", json={"org": "acme", "route": "mock"}, headers=auth())
        assert r.status == 200 and (await r.json())["purged"]["exact"] == 1
        r, _ = await post(client, chat(model="mock"), cache_headers(acme))
        assert r.headers["x-relaygate-cache"] == "miss"
        r, _ = await post(client, chat(model="other"), cache_headers(acme))
        assert r.headers["x-relaygate-cache"] == "hit-exact"
        r = await client.post("/admin/cache/purge", json={"route": "other"}, headers=auth())
        assert (await r.json())["purged"]["exact"] == 2
        r = await client.post("/admin/cache/purge", json={}, headers=auth())
        assert r.status == 400
        r = await client.post("/admin/cache/purge", json={"all": True}, headers={"authorization": "Bearer nope"})
        assert r.status == 401


async def test_false_hit_feedback_counts_logs_and_invalidates(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        await post(client, chat())
        r, _ = await post(client, chat())
        rid = r.headers["x-relaygate-request-id"]
        fb = await client.post("/admin/cache/feedback", json={"request_id": rid, "reason": "stale"}, headers=auth())
        assert fb.status == 200, await fb.text()
        assert (await fb.json())["tier"] == "exact"
        metrics = await (await client.get("/metrics")).text()
        assert 'relaygate_cache_false_hits_total{route="mock",tier="exact"} 1.0' in metrics
        r, _ = await post(client, chat())
        assert r.headers["x-relaygate-cache"] == "miss"  # the reported entry is gone
        fb = await client.post("/admin/cache/feedback", json={"request_id": "nope"}, headers=auth())
        assert fb.status == 404


async def test_cache_metrics_by_tier_and_route(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        _, first = await post(client, chat())
        await post(client, chat())
        metrics = await (await client.get("/metrics")).text()
        # provider tokens count what the provider billed: the hit's replayed usage is not counted again
        input_line = [ln for ln in metrics.splitlines()
                      if ln.startswith("relaygate_tokens_total{") and 'kind="input"' in ln]
        assert len(input_line) == 1
        assert float(input_line[0].rsplit(" ", 1)[1]) == first["usage"]["prompt_tokens"]
        assert 'relaygate_cache_tier_lookups_total{result="miss",route="mock",tier="exact"} 1.0' in metrics
        assert 'relaygate_cache_tier_lookups_total{result="hit",route="mock",tier="exact"} 1.0' in metrics
        assert "relaygate_cache_bytes " in metrics
        assert 'relaygate_cache_lookup_seconds_count{tier="exact"} 2.0' in metrics


async def test_redis_backend_is_shared_by_replicas(tmp_path: Any, redis_url: str) -> None:
    cfg_a = make_config({"state": {"redis_url": redis_url, "database_url": f"sqlite:///{tmp_path}/a.db"}}, tmp_path)
    cfg_b = make_config({"state": {"redis_url": redis_url, "database_url": f"sqlite:///{tmp_path}/b.db"}}, tmp_path)
    async with gateway_client(cfg_a) as a, gateway_client(cfg_b) as b:
        assert a.server.app  # both replicas up
        r, body_a = await post(a, chat("shared question"))
        assert r.headers["x-relaygate-cache"] == "miss"
        r, body_b = await post(b, chat("shared question"))
        assert r.headers["x-relaygate-cache"] == "hit-exact"
        assert body_b["choices"][0]["message"] == body_a["choices"][0]["message"]
        r = await b.post("/admin/cache/purge", json={"all": True}, headers=auth())
        assert (await r.json())["purged"]["exact"] == 1
        r, _ = await post(a, chat("shared question"))
        assert r.headers["x-relaygate-cache"] == "miss"
        # a false hit reported to the other replica is found through Redis
        r, _ = await post(a, chat("shared question"))
        fb = await b.post("/admin/cache/feedback", json={"request_id": r.headers["x-relaygate-request-id"]},
                          headers=auth())
        assert fb.status == 200, await fb.text()


async def test_a_hit_passes_limits_is_priced_at_the_hit_ratio_and_logged_as_a_hit(tmp_path: Any) -> None:
    raw = {"cache": {"hit_cost_ratio": 0.1},
           "pricing": {"models": {"mock-1": {"input_per_mtok": 1000, "output_per_mtok": 2000}}}}
    async with gateway_client(make_config(raw, tmp_path)) as client:
        r = await client.post("/admin/keys", json={"name": "limited", "rpm": 2}, headers=auth())
        assert r.status == 201, await r.text()
        key = (await r.json())["key"]
        miss, _ = await post(client, chat(), cache_headers(key))
        hit, _ = await post(client, chat(), cache_headers(key))
        assert hit.headers["x-relaygate-cache"] == "hit-exact"
        miss_cost = float(miss.headers["x-relaygate-cost-usd"])
        assert miss_cost > 0
        assert float(hit.headers["x-relaygate-cost-usd"]) == pytest.approx(miss_cost * 0.1)
        refused, body = await post(client, chat(), cache_headers(key))  # a hit still counts as a request
        assert refused.status == 429, body


async def test_single_flight_serves_streaming_and_plain_clients_alike(tmp_path: Any) -> None:
    routes = {"slow": {"targets": [{"provider": "mock", "model": "slow-200"}]}}
    async with gateway_client(make_config({"routes": routes}, tmp_path)) as client:
        async def one(stream: bool) -> tuple[int, str]:
            r = await client.post("/v1/chat/completions", json=chat("mixed", model="slow", stream=stream),
                                  headers=auth())
            text = await r.text()
            return int(r.headers["x-relaygate-attempts"]), text

        results = await asyncio.gather(*(one(i % 2 == 0) for i in range(10)))
        assert sum(a for a, _ in results) == 1
        assert all("data: [DONE]" in t for i, (_, t) in enumerate(results) if i % 2 == 0)
        assert all('"choices"' in t and "[DONE]" not in t for i, (_, t) in enumerate(results) if i % 2 == 1)


async def test_answer_leaves_before_the_cache_store_metrics_and_observers(tmp_path: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The work a request does for later ones runs after its answer is written, in the same
    turn of the loop: the next identical request still hits, /metrics still counts it."""
    from relaygate.cache.store import MemoryStore
    from relaygate.observability.metrics import GatewayMetrics
    from relaygate.server.front import FrontProtocol
    from relaygate.usage.alerts import AlertMonitor

    events: list[str] = []

    def spy(cls: Any, name: str, tag: str) -> None:
        real = getattr(cls, name)

        def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
            events.append(tag)
            return real(self, *a, **kw)
        monkeypatch.setattr(cls, name, wrapper)

    spy(FrontProtocol, "_write", "answer")
    spy(MemoryStore, "put_now", "cache")
    spy(GatewayMetrics, "observe", "metrics")
    spy(AlertMonitor, "observe", "observer")
    async with gateway_client(make_config({}, tmp_path)) as client:
        r1, _ = await post(client, chat("deferred"))
        assert r1.headers["x-relaygate-cache"] == "miss"
        assert events[0] == "answer" and sorted(events[1:]) == ["cache", "metrics", "observer"]
        r2, _ = await post(client, chat("deferred"))
        assert r2.headers["x-relaygate-cache"] == "hit-exact"
        text = await (await client.get("/metrics", headers=auth("sk-test-master"))).text()
        assert any(line.startswith("relaygate_requests_total{") and line.endswith(" 2.0")
                   for line in text.splitlines()), text[:2000]


async def test_a_remote_store_is_written_in_a_task_that_close_waits_for(tmp_path: Any) -> None:
    from relaygate.server.gateway import GATEWAY

    stored: list[str] = []

    class SlowStore:
        backend = "slow"

        async def get(self, key: Any) -> bytes | None:
            return None

        async def put(self, key: Any, value: bytes, ttl_s: int) -> None:
            await asyncio.sleep(0.2)
            stored.append(key.digest)

    async with gateway_client(make_config({}, tmp_path)) as client:
        stage = client.server.app[GATEWAY].services["cache"]
        stage.store = SlowStore()
        r, _ = await post(client, chat("slow store"))
        assert r.status == 200 and stored == []  # answered without waiting for the store
        assert len(stage._storing) == 1
        await stage.close()
        assert len(stored) == 1 and not stage._storing
