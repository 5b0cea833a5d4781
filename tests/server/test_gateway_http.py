"""The gateway over a real socket (in process): headers, envelopes, routing, streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from relaygate.formats.sse import SSEParser
from relaygate.server.gateway import GATEWAY
from relaygate.usage.store import LedgerStore
from tests.conftest import auth, gateway_client, make_config, serve_app
from tests.openapi_spec import validate

CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hello"}]}
ROUTES: dict[str, Any] = {
    "mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
    "four": {"strategy": "fallback", "targets": [
        {"provider": "mock", "model": "fail-429"}, {"provider": "mock", "model": "fail-503"},
        {"provider": "mock", "model": "fail-502"}, {"provider": "mock", "model": "mock-y"}]},
    "dead": {"strategy": "fallback", "targets": [
        {"provider": "mock", "model": "fail-503"}, {"provider": "mock", "model": "fail-500"}]},
    "cut": {"strategy": "fallback", "targets": [{"provider": "mock", "model": "cut-2"}]},
    "cut-early": {"strategy": "fallback", "targets": [{"provider": "mock", "model": "cut-0"},
                                                       {"provider": "mock", "model": "backup"}]},
    "slow": {"targets": [{"provider": "mock", "model": "hang"}]},
}


def cfg(tmp_path: Path, **extra: Any):  # type: ignore[no-untyped-def]
    return make_config({"routes": ROUTES, "timeouts": {"first_byte_ms": 300, "total_ms": 2000}, **extra}, tmp_path)


def sse_events(raw: bytes) -> list[Any]:
    return SSEParser().feed(raw)


async def test_openai_chat_answers_with_every_header(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        body = await resp.json()
        assert resp.status == 200, body
        validate("CreateChatCompletionResponse", body)
        h = resp.headers
        assert h["x-relaygate-provider"] == "mock" and h["x-relaygate-model"] == "mock-1"
        assert h["x-relaygate-attempts"] == "1" and "x-relaygate-degraded" not in h
        assert len(h["x-relaygate-request-id"]) >= 16
        assert h["x-relaygate-cache"] in ("miss", "bypass")
        assert h["x-relaygate-cost-usd"].count(".") == 1 and len(h["x-relaygate-cost-usd"].split(".")[1]) == 9
        assert body["choices"][0]["message"]["content"] == "mock reply: hello"


async def test_four_level_fallback_marks_degraded_and_counts_attempts(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "four"}, headers=auth())
        assert resp.status == 200
        assert resp.headers["x-relaygate-attempts"] == "4"
        assert resp.headers["x-relaygate-degraded"] == "true"
        assert resp.headers["x-relaygate-model"] == "mock-y"


async def test_all_targets_failed_is_a_503_listing_attempts(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "dead"}, headers=auth())
        body = await resp.json()
        assert resp.status == 503
        assert body["error"]["code"] == "all_targets_failed"
        assert [a["status"] for a in body["error"]["attempts"]] == [503, 500]
        assert "mock/fail-503 -> 503" in body["error"]["message"]
        anth = await client.post("/v1/messages", json={**CHAT, "model": "dead", "max_tokens": 5}, headers=auth())
        abody = await anth.json()
        assert anth.status == 503 and abody["type"] == "error" and abody["error"]["type"] == "api_error"


async def test_auth_errors_and_envelopes(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-wrong"))
        assert resp.status == 401
        resp = await client.post("/v1/messages", json={**CHAT, "max_tokens": 5}, headers={"x-api-key": "nope"})
        body = await resp.json()
        assert resp.status == 401 and body["type"] == "error" and body["error"]["type"] == "authentication_error"
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth())
        body = await resp.json()
        assert resp.status == 404 and body["error"]["code"] == "model_not_found"
        resp = await client.post("/v1/messages", json=CHAT, headers={"x-api-key": "sk-test-master"})
        assert resp.status == 400 and "max_tokens" in (await resp.json())["error"]["message"]
        resp = await client.post("/v1/chat/completions", data=b"{not json", headers=auth())
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"


async def test_static_config_key_limited_to_its_models(tmp_path: Path) -> None:
    c = cfg(tmp_path, keys=[{"name": "app", "key": "sk-app-123456", "models": ["mock"]}])
    async with gateway_client(c) as client:
        ok = await client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-app-123456"))
        assert ok.status == 200
        denied = await client.post("/v1/chat/completions", json={**CHAT, "model": "four"}, headers=auth("sk-app-123456"))
        assert denied.status == 403 and (await denied.json())["error"]["code"] == "model_not_allowed"
        models = await (await client.get("/v1/models", headers=auth("sk-app-123456"))).json()
        validate("ListModelsResponse", models)
        assert [m["id"] for m in models["data"]] == ["mock"]


async def test_body_too_large_is_413(tmp_path: Path) -> None:
    c = cfg(tmp_path, server={"max_body_bytes": 2048})
    async with gateway_client(c) as client:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        resp = await client.post("/v1/chat/completions", json=big, headers=auth())
        assert resp.status == 413


async def test_openai_stream_chunks_are_valid_and_carry_cost_before_done(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        resp = await client.post("/v1/chat/completions", json=body, headers=auth())
        raw = await resp.read()
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(raw)
        assert events[-1].data == "[DONE]"
        for ev in events[:-1]:
            validate("CreateChatCompletionStreamResponse", orjson.loads(ev.data))
        assert b": x-relaygate-cost-usd=" in raw and raw.index(b": x-relaygate-cost-usd=") < raw.index(b"[DONE]")
        assert orjson.loads(events[-2].data)["usage"]["completion_tokens"] > 0


async def test_openai_stream_from_an_openai_upstream_is_its_own_bytes_less_unasked_usage(tmp_path: Path) -> None:
    """Same format both sides and the request unchanged: the client gets the upstream's
    chunks as sent (their id is the upstream's), without the usage chunk the gateway asked
    for on its own account, which still bills the provider's figures."""
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth())
        raw = await resp.read()
        events = sse_events(raw)
        assert resp.status == 200 and events[-1].data == "[DONE]"
        chunks = [orjson.loads(ev.data) for ev in events[:-1]]
        for chunk in chunks:
            validate("CreateChatCompletionStreamResponse", chunk)
        assert all(c["choices"] for c in chunks) and not any(c.get("usage") for c in chunks)
        ids = {c["id"] for c in chunks}
        assert len(ids) == 1 and resp.headers["x-relaygate-request-id"] not in ids.pop()
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "mock reply: hello"
        assert raw.index(b": x-relaygate-cost-usd=") < raw.index(b"[DONE]")
        gw = client.server.app[GATEWAY]
        await gw.services["ledger"].flush()
        row = await LedgerStore(gw.services["db"]).get(resp.headers["x-relaygate-request-id"])
        assert row is not None and row["output_tokens"] > 0 and row["estimated"] == 0 and row["ttft_ms"] is not None


async def test_anthropic_stream_from_an_anthropic_upstream_is_its_own_events(tmp_path: Path) -> None:
    """The same for Anthropic: the upstream's events as sent (its message id), then the
    cost comment, then the relay's message_stop; the provider's usage billed."""
    events = [
        {"type": "message_start", "message": {"id": "msg_up", "type": "message", "role": "assistant",
                                              "model": "claude-x", "content": [], "usage": {"input_tokens": 7}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi there"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
    ]
    relayed = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)

    async def messages(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(relayed + b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    async with serve_app(app) as url:
        c = cfg(tmp_path, providers={"ant": {"type": "anthropic", "base_url": url, "api_key": "sk-ant-x"}},
                routes={**ROUTES, "claude": {"targets": [{"provider": "ant", "model": "claude-x"}]}})
        async with gateway_client(c) as client:
            body = {"model": "claude", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            resp = await client.post("/v1/messages", json=body, headers=auth())
            raw = await resp.read()
            assert resp.status == 200 and raw.startswith(relayed)
            rest = raw[len(relayed):]
            assert rest.startswith(b": x-relaygate-cost-usd=") and rest.endswith(b"event: message_stop\n"
                                                                                    b'data: {"type":"message_stop"}\n\n')
            gw = client.server.app[GATEWAY]
            await gw.services["ledger"].flush()
            row = await LedgerStore(gw.services["db"]).get(resp.headers["x-relaygate-request-id"])
            assert row is not None and (row["input_tokens"], row["output_tokens"], row["estimated"]) == (7, 3, 0)


async def test_stream_cut_after_first_byte_ends_with_an_error_event(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "cut", "stream": True}, headers=auth())
        events = sse_events(await resp.read())
        assert resp.status == 200
        assert "error" in orjson.loads(events[-1].data) and all(e.data != "[DONE]" for e in events)
        anth = await client.post("/v1/messages", json={**CHAT, "model": "cut", "stream": True, "max_tokens": 9},
                                 headers=auth())
        aevents = sse_events(await anth.read())
        assert aevents[-1].event == "error" and all(e.event != "message_stop" for e in aevents)


async def test_stream_failing_before_first_byte_falls_over(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "cut-early", "stream": True},
                                 headers=auth())
        events = sse_events(await resp.read())
        assert resp.headers["x-relaygate-model"] == "backup" and resp.headers["x-relaygate-degraded"] == "true"
        assert events[-1].data == "[DONE]"


async def test_a_hanging_upstream_times_out_as_a_503_not_a_hang(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "slow"}, headers=auth())
        body = await resp.json()
        assert resp.status == 503 and body["error"]["attempts"][0]["status"] == 504


async def test_direct_provider_model_and_request_config_header(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "mock/custom-model"}, headers=auth())
        assert resp.status == 200 and resp.headers["x-relaygate-model"] == "custom-model"
        header = orjson.dumps({"strategy": {"mode": "fallback"}, "targets": [
            {"provider": "mock", "override_params": {"model": "fail-503"}},
            {"provider": "mock", "override_params": {"model": "second"}}]}).decode()
        resp = await client.post("/v1/chat/completions", json=CHAT, headers={**auth(), "x-relaygate-config": header})
        assert resp.status == 200 and resp.headers["x-relaygate-model"] == "second"
        bad = await client.post("/v1/chat/completions", json=CHAT,
                                headers={**auth(), "x-relaygate-config": '{"targets": [{"provider": "zzz"}]}'})
        assert bad.status == 400 and "unknown provider 'zzz'" in (await bad.json())["error"]["message"]


async def test_health_ready_and_metrics(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        assert (await client.get("/health")).status == 200
        ready = await client.get("/health/ready")
        assert ready.status == 200 and (await ready.json())["checks"]["providers"]["mock"] == "ok"
        await client.post("/v1/chat/completions", json={**CHAT, "model": "four"}, headers=auth())
        text = await (await client.get("/metrics")).text()
        assert 'relaygate_fallbacks_total{route="four"} 1.0' in text
        assert 'relaygate_upstream_attempts_total{model="fail-429",provider="mock",status="429"} 1.0' in text
        assert "relaygate_request_duration_seconds_bucket" in text


async def test_breaker_state_is_visible_in_admin_and_metrics(tmp_path: Path) -> None:
    c = cfg(tmp_path, circuit_breaker={"failure_threshold": 2})
    async with gateway_client(c) as client:
        for _ in range(3):
            await client.post("/v1/chat/completions", json={**CHAT, "model": "dead"}, headers=auth())
        admin = await (await client.get("/admin/breakers", headers=auth())).json()
        states = {b["target"]: b["state"] for b in admin["data"]}
        assert states["mock/fail-503"] == "open"
        text = await (await client.get("/metrics")).text()
        assert 'relaygate_breaker_state{target="mock/fail-503"} 2.0' in text
        assert (await client.get("/admin/breakers")).status == 401


async def test_openapi_lists_every_route(tmp_path: Path) -> None:
    async with gateway_client(cfg(tmp_path)) as client:
        doc = await (await client.get("/openapi.json")).json()
        served = {r.resource.canonical for r in client.app.router.routes() if r.method != "HEAD"}  # type: ignore[union-attr]
        assert served <= set(doc["paths"])
        chat = doc["paths"]["/v1/chat/completions"]["post"]
        assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["model", "messages"]
        assert doc["paths"]["/admin/breakers"]["get"]["security"] == [{"masterKey": []}]
        assert doc["paths"]["/admin/breakers"]["get"]["summary"] == "Circuit breaker state per target."
