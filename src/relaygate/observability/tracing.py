"""OpenTelemetry spans, optional (the `otel` extra; `usage.tracing.enabled: true`).

Each finished request becomes a `relaygate.request` span with one child span per upstream
attempt, built from the usage record once the request is over (so tracing adds nothing
to the hot path but a few object allocations). Attempts ran one after another; their spans
are laid end to end from the request's start (backoff sleeps are not separated out). A
client's `x-relaygate-trace-id` (32 hex digits, W3C style) becomes the trace id.
Without `opentelemetry-sdk` installed, `RequestTracer.create` returns None and the
gateway runs untraced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from relaygate.usage.config import TracingConfig

if TYPE_CHECKING:
    from relaygate.usage.record import UsageRecord

log = logging.getLogger("relaygate.tracing")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class RequestTracer:
    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace

        self.provider = provider
        self.tracer = provider.get_tracer("relaygate")
        self._trace = trace

    @classmethod
    def create(cls, cfg: TracingConfig) -> RequestTracer | None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("usage.tracing.enabled but opentelemetry-sdk is not installed "
                        "(pip install 'relaygate[otel]'); running without traces")
            return None
        provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
        endpoint = cfg.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("no OTLP exporter installed (opentelemetry-exporter-otlp-proto-http): "
                            "spans are built but not exported")
            else:
                url = cfg.endpoint if cfg.endpoint else None
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        return cls(provider)

    def add_span_processor(self, processor: Any) -> None:
        self.provider.add_span_processor(processor)

    def observe(self, rec: UsageRecord) -> None:
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        trace = self._trace
        parent = None
        tid = (rec.trace_id or "").lower().replace("-", "")
        if _TRACE_ID.match(tid) and int(tid, 16):
            remote = SpanContext(int(tid, 16), int.from_bytes(os.urandom(8), "big") or 1, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        start = int(rec.ts * 1e9)
        attributes: dict[str, Any] = {
            "relaygate.request_id": rec.request_id, "relaygate.route": rec.route or rec.requested_model,
            "relaygate.status": rec.status, "relaygate.attempts": rec.attempts,
            "relaygate.cache": rec.cache_status, "relaygate.cost_usd": f"{rec.cost_usd:.9f}",
            "gen_ai.usage.input_tokens": rec.input_tokens, "gen_ai.usage.output_tokens": rec.output_tokens,
        }
        for name, value in (("relaygate.key_id", rec.key_id), ("relaygate.team", rec.team),
                            ("relaygate.provider", rec.provider), ("gen_ai.response.model", rec.model),
                            ("relaygate.trace_id", rec.trace_id)):
            if value is not None:
                attributes[name] = value
        span = self.tracer.start_span("relaygate.request", context=parent, kind=SpanKind.SERVER,
                                      start_time=start, attributes=attributes)
        if rec.status >= 500:
            span.set_status(Status(StatusCode.ERROR, rec.error or str(rec.status)))
        inner = trace.set_span_in_context(span)
        t = start
        for a in rec.attempt_list:
            dur = int(a.latency_ms * 1e6)
            child = self.tracer.start_span(
                f"relaygate.attempt {a.provider}", context=inner, kind=SpanKind.CLIENT, start_time=t,
                attributes={"relaygate.provider": a.provider, "gen_ai.request.model": a.model,
                            "http.response.status_code": a.status, "relaygate.skipped": a.skipped,
                            "relaygate.billed": a.billed, "gen_ai.usage.input_tokens": a.input_tokens,
                            "gen_ai.usage.output_tokens": a.output_tokens})
            if a.status >= 400 or a.skipped:
                child.set_status(Status(StatusCode.ERROR, a.message or str(a.status)))
            child.end(end_time=t + dur)
            t += dur
        span.end(end_time=max(t, start + int(rec.latency_ms * 1e6)))

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)
