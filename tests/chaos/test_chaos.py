from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner

from relaygate.chaos.cli import chaos_command
from relaygate.chaos.load import ChaosSettings, ChaosStats, RequestOutcome, run_chaos
from relaygate.mock_upstream.faults import FaultConfig, FaultInjector
from relaygate.mock_upstream.server import MockUpstreamThread, serving
from tests.conftest import serve_app


async def _run(url: str, **kw: object) -> ChaosStats:
    settings = ChaosSettings(gateway=url, key="k", **kw)  # type: ignore[arg-type]
    return await run_chaos(settings)


async def test_all_succeed_against_healthy_upstream() -> None:
    async with serving(FaultConfig()) as url:
        stats = await _run(url, requests=60, concurrency=8)
        streamed = await _run(url, requests=30, concurrency=5, stream=True)
        anthropic = await _run(url + "/v1", requests=20, concurrency=4, stream=True, wire_format="anthropic")
    for s, n in ((stats, 60), (streamed, 30), (anthropic, 20)):
        assert s.requests == n and s.succeeded == n and s.failure_rate == 0.0
        assert s.statuses == {"200": n}
        assert s.latency_percentile_ms(50) is not None
        assert s.mean_attempts is None  # the upstream sends no x-relaygate-attempts


async def test_seeded_failures_are_counted_exactly() -> None:
    config = FaultConfig(fail_rate=0.25, fail_codes=(429, 503), seed=9)
    async with serving(config) as url:
        stats = await _run(url, requests=300, concurrency=16)
    # Every request draws from the seeded RNG in arrival order, so the count is exact.
    replay = FaultInjector(config)
    expected = [replay.decide("gpt-4o", False).fail_status for _ in range(300)]
    expected_failures = sum(1 for s in expected if s is not None)
    assert stats.failed == expected_failures
    assert stats.statuses["429"] == expected.count(429)
    assert stats.statuses["503"] == expected.count(503)
    assert stats.failures == {"http_429": expected.count(429), "http_503": expected.count(503)}
    assert stats.failure_rate == pytest.approx(expected_failures / 300)


async def test_cut_streams_hangs_and_fail_models() -> None:
    async with serving(FaultConfig()) as url:
        cut = await _run(url, requests=10, concurrency=3, stream=True, model="cut-2")
        cut_anthropic = await _run(url, requests=5, stream=True, model="cut-2", wire_format="anthropic")
        hung = await _run(url, requests=3, concurrency=3, model="hang", timeout_s=0.3)
        failing = await _run(url, requests=7, model="fail-503")
        cut_body = await _run(url, requests=4, model="cut-1")
        error_events = await _run(url, requests=4, stream=True, model="error-1")
        error_events_anthropic = await _run(url, requests=4, stream=True, model="error-1", wire_format="anthropic")
        stalled = await _run(url, requests=2, concurrency=2, stream=True, model="stall-1", timeout_s=0.3)
    assert cut_body.failures == {"body_incomplete": 4}
    assert error_events.failures == {"stream_error": 4} == error_events_anthropic.failures
    assert stalled.failures == {"timeout": 2} and stalled.statuses == {"200": 2}
    assert cut.succeeded == 0 and cut.failures == {"stream_incomplete": 10} and cut.statuses == {"200": 10}
    assert cut_anthropic.failures == {"stream_incomplete": 5}
    assert hung.failures == {"timeout": 3} and hung.statuses == {"no_response": 3}
    assert failing.failures == {"http_503": 7}


@pytest.fixture
async def stub_gateway() -> AsyncIterator[str]:
    """A stand-in gateway: every other answer is degraded, attempts alternate 1/2, and
    streams of model `broken` end with an error event."""
    count = 0

    async def chat(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        body = await request.json()
        headers = {"x-relaygate-attempts": str(1 + count % 2),
                   "x-relaygate-degraded": "true" if count % 2 else "false"}
        if not body.get("stream"):
            return web.json_response({"choices": []}, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/event-stream"
        await response.prepare(request)
        if body["model"] == "broken":
            await response.write(b'data: {"choices":[]}\n\ndata: {"error": {"message": "upstream died"}}\n\n')
        else:
            await response.write(b'data: {"choices":[]}\n\ndata: [DONE]\n\n')
        return response

    async def messages(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "text/event-stream"
        await response.prepare(request)
        await response.write(b'event: message_start\ndata: {"type":"message_start"}\n\n'
                             b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n')
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    async with serve_app(app) as url:
        yield url


async def test_degraded_attempts_and_error_events(stub_gateway: str) -> None:
    seen: list[RequestOutcome] = []
    stats = await run_chaos(ChaosSettings(gateway=stub_gateway, requests=10, concurrency=1), seen.append)
    assert len(seen) == 10
    assert stats.degraded == 5 and stats.degraded_rate == 0.5
    assert stats.mean_attempts == 1.5
    broken = await _run(stub_gateway, requests=4, stream=True, model="broken")
    assert broken.failures == {"stream_error": 4}
    ok = await _run(stub_gateway, requests=4, stream=True)
    assert ok.succeeded == 4
    anthropic_error = await _run(stub_gateway, requests=2, stream=True, wire_format="anthropic")
    assert anthropic_error.failures == {"stream_error": 2}


def test_cli_json_output() -> None:
    app = typer.Typer()
    app.command()(chaos_command)
    with MockUpstreamThread(FaultConfig()) as upstream:
        result = CliRunner().invoke(
            app,
            ["--gateway", upstream.url, "--requests", "20", "--concurrency", "4", "--model", "fail-429", "--json"],
            env={"RELAYGATE_MASTER_KEY": "k"},
        )
        plain = CliRunner().invoke(app, ["--gateway", upstream.url, "--requests", "5", "--stream"],
                                   env={"RELAYGATE_MASTER_KEY": "k"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["requests"] == 20 and data["failure_rate"] == 1.0
    assert data["status_histogram"] == {"429": 20}
    assert set(data) >= {"success_rate", "degraded_rate", "mean_attempts", "latency_ms"}
    assert plain.exit_code == 0, plain.output
    assert "success rate" in plain.stdout and "100.00%" in plain.stdout
