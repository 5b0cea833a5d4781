"""Config sections owned by cost and usage: `usage:` (ledger, retention, tracing) and
`alerts:` (webhooks, anomaly and rate alerts, usage events). Plain pydantic, no imports
from `relaygate.config` (which imports this module)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TracingConfig(_Strict):
    """OpenTelemetry spans per request and per attempt (needs the `otel` extra)."""

    enabled: bool = False
    # OTLP/HTTP traces endpoint; None = the OTEL_EXPORTER_OTLP_* environment, else no export
    endpoint: str | None = None
    service_name: str = "relaygate"


class UsageConfig(_Strict):
    """`usage:`: the ledger's journal, its flush to the database, and retention."""

    # records older than this are deleted (0 = keep forever)
    retention_days: int = Field(400, ge=0)
    # the journal is fsynced at least this often (DESIGN §6: at least every second)
    fsync_interval_s: float = Field(0.5, gt=0, le=1.0)
    # closed journal segments are written to the database this often, in batches
    flush_interval_s: float = Field(1.0, gt=0)
    batch_size: int = Field(1000, ge=1)
    segment_max_bytes: int = Field(8 * 1024 * 1024, ge=4096)
    # one JSON access-log line per request
    access_log: bool = True
    tracing: TracingConfig = Field(default_factory=TracingConfig)


class Webhook(_Strict):
    url: str
    # HMAC-SHA256 key: `x-relaygate-signature: sha256=hex(hmac(secret, "<timestamp>.<body>"))`
    secret: str | None = None
    # event names this webhook receives (`budget.*`, `alert.*`, `usage.request`);
    # None = every event except the per-request `usage.request` stream
    events: list[str] | None = None


class SpendAnomalyConfig(_Strict):
    enabled: bool = True
    sigma: float = Field(2.0, gt=0)
    # trailing hours the current hour is compared with, and the fewest that make a baseline
    baseline_hours: int = Field(168, ge=2)
    min_baseline_hours: int = Field(6, ge=2)
    # ignore hours cheaper than this (a baseline of zeros makes any spend "anomalous")
    min_spend_usd: float = Field(1.0, ge=0)


class RateAlertConfig(_Strict):
    enabled: bool = True
    threshold: float = Field(0.25, gt=0, le=1)
    window_s: float = Field(300, gt=0)
    min_requests: int = Field(20, ge=1)
    # one alert per provider per this many seconds
    cooldown_s: float = Field(900, ge=0)


class UsageEventsConfig(_Strict):
    """`usage.request` events (one per request) posted in batches to the webhooks that
    list `usage.request` in their `events`."""

    batch_size: int = Field(200, ge=1)
    interval_s: float = Field(5.0, gt=0)


class AlertsConfig(_Strict):
    webhooks: list[Webhook] = Field(default_factory=list)
    # budget alerts (the limits stage): percentages of a budget that fire an alert
    budget_thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100])
    # delivery tries after the first, with exponential backoff
    retries: int = Field(4, ge=0, le=10)
    backoff_base_s: float = Field(0.5, gt=0)
    timeout_s: float = Field(5.0, gt=0)
    check_interval_s: float = Field(60.0, gt=0)
    spend_anomaly: SpendAnomalyConfig = Field(default_factory=SpendAnomalyConfig)
    error_rate: RateAlertConfig = Field(default_factory=RateAlertConfig)
    fallback_rate: RateAlertConfig = Field(default_factory=RateAlertConfig)
    usage_events: UsageEventsConfig = Field(default_factory=UsageEventsConfig)
