"""Sends N requests through a gateway with bounded concurrency and counts what came back.

A request succeeds when it got a 2xx answer and, for streams, the stream ended properly
(`data: [DONE]` for OpenAI, `event: message_stop` for Anthropic) without an error event.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson

WireFormat = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    gateway: str
    requests: int
    concurrency: int = 10
    model: str = "gpt-4o"
    stream: bool = False
    wire_format: WireFormat = "openai"
    key: str | None = None
    timeout_s: float = 60.0
    max_tokens: int = 64
    bypass_cache: bool = True  # cache hits would hide upstream failures


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """What one request saw. `status` is 0 when no HTTP answer arrived."""

    ok: bool
    status: int
    latency_s: float
    degraded: bool = False
    attempts: int | None = None
    failure: str | None = None  # timeout | connection | http_<status> | body_incomplete | stream_incomplete | stream_error


@dataclass(slots=True)
class ChaosStats:
    """Aggregate of a chaos run."""

    requests: int = 0
    succeeded: int = 0
    degraded: int = 0
    attempts_sum: int = 0
    attempts_reported: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: RequestOutcome) -> None:
        self.requests += 1
        self.succeeded += outcome.ok
        self.degraded += outcome.degraded
        if outcome.attempts is not None:
            self.attempts_sum += outcome.attempts
            self.attempts_reported += 1
        self.latencies_s.append(outcome.latency_s)
        self.statuses[str(outcome.status) if outcome.status else "no_response"] += 1
        if outcome.failure:
            self.failures[outcome.failure] += 1

    @property
    def failed(self) -> int:
        return self.requests - self.succeeded

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.requests if self.requests else 0.0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def degraded_rate(self) -> float:
        return self.degraded / self.requests if self.requests else 0.0

    @property
    def mean_attempts(self) -> float | None:
        """Mean of `x-relaygate-attempts` over the answers that carried it."""
        return self.attempts_sum / self.attempts_reported if self.attempts_reported else None

    def latency_percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile of request latency, in milliseconds."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] * 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "success_rate": round(self.success_rate, 6),
            "failure_rate": round(self.failure_rate, 6),
            "degraded": self.degraded,
            "degraded_rate": round(self.degraded_rate, 6),
            "mean_attempts": None if self.mean_attempts is None else round(self.mean_attempts, 4),
            "latency_ms": {
                "p50": _round(self.latency_percentile_ms(50)),
                "p99": _round(self.latency_percentile_ms(99)),
            },
            "status_histogram": dict(sorted(self.statuses.items())),
            "failure_reasons": dict(sorted(self.failures.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requests / self.elapsed_s, 2) if self.elapsed_s else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def run_chaos(
    settings: ChaosSettings, on_done: Callable[[RequestOutcome], None] | None = None
) -> ChaosStats:
    """Runs the load and returns its statistics; `on_done` sees each request's outcome."""
    if settings.requests < 0 or settings.concurrency < 1:
        raise ValueError("requests must be >= 0 and concurrency >= 1")
    stats = ChaosStats()
    next_index = iter(range(settings.requests))
    connector = aiohttp.TCPConnector(limit=settings.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for index in next_index:
                outcome = await _one_request(session, settings, index)
                stats.add(outcome)
                if on_done is not None:
                    on_done(outcome)

        await asyncio.gather(*(worker() for _ in range(min(settings.concurrency, max(1, settings.requests)))))
    stats.elapsed_s = time.perf_counter() - started
    return stats


def _request_for(settings: ChaosSettings, index: int) -> tuple[str, dict[str, str], bytes]:
    base = settings.gateway.rstrip("/").removesuffix("/v1")
    headers = {"content-type": "application/json"}
    if settings.bypass_cache:
        headers["x-relaygate-cache"] = "no-cache"
    text = f"chaos request {index}: say something short"
    body: dict[str, Any] = {
        "model": settings.model,
        "max_tokens": settings.max_tokens,
        "messages": [{"role": "user", "content": text}],
    }
    if settings.stream:
        body["stream"] = True
    if settings.wire_format == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
        if settings.key:
            headers["x-api-key"] = settings.key
        return base + "/v1/messages", headers, orjson.dumps(body)
    if settings.key:
        headers["Authorization"] = f"Bearer {settings.key}"
    if settings.stream:
        body["stream_options"] = {"include_usage": True}
    return base + "/v1/chat/completions", headers, orjson.dumps(body)


async def _one_request(session: aiohttp.ClientSession, settings: ChaosSettings, index: int) -> RequestOutcome:
    url, headers, body = _request_for(settings, index)
    started = time.perf_counter()
    status = 0
    degraded = False
    attempts: int | None = None
    try:
        async with session.post(url, data=body, headers=headers) as response:
            status = response.status
            degraded = response.headers.get("x-relaygate-degraded", "").lower() == "true"
            attempts = _int_or_none(response.headers.get("x-relaygate-attempts"))
            if not 200 <= status < 300:
                await response.read()
                failure: str | None = f"http_{status}"
            elif settings.stream:
                failure = await _stream_failure(response, settings.wire_format)
            else:
                await response.read()
                failure = None
    except TimeoutError:
        failure = "timeout"
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        if not status:
            failure = "connection"
        else:
            failure = "stream_incomplete" if settings.stream else "body_incomplete"
    except aiohttp.ClientError:
        failure = "connection"
    latency = time.perf_counter() - started
    return RequestOutcome(failure is None, status, latency, degraded, attempts, failure)


async def _stream_failure(response: aiohttp.ClientResponse, wire_format: WireFormat) -> str | None:
    """None when the SSE stream ended properly; else why not."""
    ended = False
    errored = False
    event_name = ""
    async for raw in response.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            event_name = ""
            continue
        if line.startswith(b"event:"):
            event_name = line[6:].strip().decode()
            if event_name == "error":
                errored = True
            elif event_name == "message_stop" and wire_format == "anthropic":
                ended = True
        elif line.startswith(b"data:"):
            data = line[5:].strip()
            if wire_format == "openai":
                if data == b"[DONE]":
                    ended = True
                elif data.startswith(b'{"error"') or _is_error_payload(data):
                    errored = True
            elif event_name == "" and b'"type":"error"' in data.replace(b" ", b""):
                errored = True
    if errored:
        return "stream_error"
    return None if ended else "stream_incomplete"


def _is_error_payload(data: bytes) -> bool:
    if b'"error"' not in data:
        return False
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and "error" in payload and "choices" not in payload


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
