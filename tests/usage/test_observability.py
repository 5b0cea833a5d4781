"""What an operator sees: `/metrics` series (tokens, cost, errors, fallbacks, cache hit
ratio, refusals, ledger health), one scrubbed JSON access-log line per request with its
request and trace ids, and OpenTelemetry spans per attempt when enabled."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from relaygate.observability.logs import JsonFormatter
from relaygate.observability.metrics import BoundedLabel
from relaygate.server.gateway import GATEWAY
from tests.conftest import auth, gateway_client, make_config

ROUTES = {
    "mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
    "chain": {"strategy": "fallback", "targets": [{"provider": "mock", "model": "fail-503"},
                                                  {"provider": "mock", "model": "mock-1"}]},
}
PRICED = {"models": {"mock-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}


def ledger_stage(gw: Any) -> Any:
    return next(s for s in gw.stages if s.name == "ledger")


def chat(model: str = "mock") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello metrics"}]}


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_cover_tokens_cost_errors_fallbacks_and_ledger(tmp_path: Path) -> None:
    cfg = make_config({"routes": ROUTES, "pricing": PRICED,
                       "keys": [{"name": "t", "key": "rg-team-key-000000000", "team": "red"}]}, tmp_path)
    async with gateway_client(cfg) as client:
        for model in ("mock", "mock", "chain"):
            assert (await client.post("/v1/chat/completions", json=chat(model),
                                      headers=auth("rg-team-key-000000000"))).status == 200
        assert (await client.post("/v1/chat/completions", json=chat(), headers=auth("rg-nope-0000000000"))).status \
            == 401
        await client.server.app[GATEWAY].services["ledger"].flush()
        text = await (await client.get("/metrics")).text()
    assert metric(text, "relaygate_tokens_total", provider="mock", model="mock-1", kind="input") > 0
    assert metric(text, "relaygate_team_tokens_total", team="red", kind="output") > 0
    assert metric(text, "relaygate_cost_usd_total", provider="mock", model="mock-1", team="red") > 0
    assert metric(text, "relaygate_upstream_errors_total", provider="mock", status="503") == 1
    assert metric(text, "relaygate_provider_fallbacks_total", provider="mock") == 1
    assert metric(text, "relaygate_fallbacks_total", route="chain") == 1
    assert metric(text, "relaygate_request_errors_total", **{"class": "4xx"}) == 1
    assert metric(text, "relaygate_ledger_records_total") == 4
    assert metric(text, "relaygate_ledger_flushed_total") >= 4
    assert "relaygate_cache_hit_ratio" in text
    assert metric(text, "relaygate_request_duration_seconds_count", route="mock") == 2


def test_bounded_label_folds_new_values_past_its_limit() -> None:
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("a", "b", "c", "a", None)] == ["a", "b", "other", "a", "none"]


async def test_one_scrubbed_access_log_line_per_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config({"routes": ROUTES}, tmp_path)
    caplog.set_level(logging.INFO, logger="relaygate.access")
    async with gateway_client(cfg) as client:
        await client.post("/v1/chat/completions", json=chat(), headers={
            **auth(), "x-relaygate-request-id": "log-1", "x-relaygate-trace-id": "trace-9"})
        await client.post("/v1/chat/completions", json=chat(), headers={
            **auth("sk-secretsecretsecret123"), "x-relaygate-request-id": "log-2"})
    records = [r for r in caplog.records if r.name == "relaygate.access"]
    assert [r.fields["request_id"] for r in records] == ["log-1", "log-2"]  # type: ignore[attr-defined]
    fmt = JsonFormatter(lambda: ["sk-test-master"])
    lines = [orjson.loads(fmt.format(r)) for r in records]
    assert lines[0]["trace_id"] == "trace-9" and lines[0]["status"] == 200 and lines[0]["provider"] == "mock"
    assert "cost_usd" in lines[0] and "latency_ms" in lines[0]
    assert lines[1]["status"] == 401
    rendered = "\n".join(fmt.format(r) for r in records)
    assert "sk-secretsecretsecret123" not in rendered and "sk-test-master" not in rendered


def test_log_fields_are_scrubbed() -> None:
    rec = logging.LogRecord("relaygate.access", logging.INFO, __file__, 1, "x", None, None)
    rec.fields = {"error": "upstream said: bad key sk-abcdefghijklmnop", "status": 502}  # type: ignore[attr-defined]
    line = orjson.loads(JsonFormatter().format(rec))
    assert line["error"] == "upstream said: bad key [redacted]" and line["status"] == 502


def _otel_sdk_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("opentelemetry.sdk") is not None


async def test_spans_per_request_and_attempt_when_tracing_is_on(tmp_path: Path) -> None:
    # The `otel` extra (opentelemetry-sdk) is what this test exercises; without it the
    # gateway must run untraced, which the next test checks in any environment.
    assert _otel_sdk_installed(), "install the otel extra (opentelemetry-sdk) to test tracing"
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    cfg = make_config({"routes": ROUTES, "usage": {"tracing": {"enabled": True}}}, tmp_path)
    exporter = InMemorySpanExporter()
    async with gateway_client(cfg) as client:
        gw = client.server.app[GATEWAY]
        tracer = next(o.__self__ for o in ledger_stage(gw).observers if getattr(o, "__name__", "") == "observe"
                      and type(o.__self__).__name__ == "RequestTracer")
        tracer.add_span_processor(SimpleSpanProcessor(exporter))
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        resp = await client.post("/v1/chat/completions", json=chat("chain"),
                                 headers={**auth(), "x-relaygate-trace-id": trace_id})
        assert resp.status == 200
    spans = exporter.get_finished_spans()
    names = sorted(s.name for s in spans)
    assert names == ["relaygate.attempt mock", "relaygate.attempt mock", "relaygate.request"]
    request = next(s for s in spans if s.name == "relaygate.request")
    assert format(request.context.trace_id, "032x") == trace_id
    attempts = [s for s in spans if s.name != "relaygate.request"]
    assert all(s.parent is not None and s.parent.span_id == request.context.span_id for s in attempts)
    assert sorted(s.attributes["http.response.status_code"] for s in attempts) == [200, 503]


async def test_tracing_off_by_default(tmp_path: Path) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        stage = ledger_stage(client.server.app[GATEWAY])
        assert all(type(getattr(o, "__self__", None)).__name__ != "RequestTracer" for o in stage.observers)


async def test_tracing_enabled_without_the_sdk_runs_untraced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    import sys

    for name in list(sys.modules):
        if name.startswith("opentelemetry.sdk"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # import fails as if not installed
    cfg = make_config({"usage": {"tracing": {"enabled": True}}}, tmp_path)
    async with gateway_client(cfg) as client:
        resp = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert resp.status == 200
        stage = ledger_stage(client.server.app[GATEWAY])
        assert all(type(getattr(o, "__self__", None)).__name__ != "RequestTracer" for o in stage.observers)
    assert any("opentelemetry-sdk is not installed" in r.getMessage() for r in caplog.records)


def test_deferred_histogram_renders_what_prometheus_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from relaygate.observability.metrics import Buckets

    bounds = (0.001, 0.01, 0.1, 1.0)
    values = [0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.99, 1.0, 7.5, 0.0]  # on, under and past bounds
    direct_reg, deferred_reg = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["route"], buckets=bounds, registry=direct_reg)
    deferred = Buckets(Histogram("h", "h", ["route"], buckets=bounds, registry=deferred_reg), bounds)
    for i, v in enumerate(values):
        route = "a" if i % 3 else "b"
        direct.labels(route).observe(v)
        deferred(route).observe(v)
    assert b"h_count" not in generate_latest(deferred_reg)  # nothing before the scrape
    deferred.flush()
    deferred.flush()  # a second flush adds nothing
    strip = [line for line in generate_latest(direct_reg).split(b"\n") if b"_created" not in line]
    got = [line for line in generate_latest(deferred_reg).split(b"\n") if b"_created" not in line]
    assert got == strip
    deferred("a").observe(0.2)
    deferred.flush()
    assert b'h_bucket{le="1.0",route="a"} 6.0' in generate_latest(deferred_reg)
