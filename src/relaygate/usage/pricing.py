"""The pricing catalog: dated per-model rates (shipped in `catalog.json`), overridden
from config (`pricing.models`), and the one rule that turns a `Usage` into dollars.

The rule (DESIGN §6): `Usage.input_tokens` includes cache reads and writes, so
uncached input = input - cache_read - cache_write at the input rate, cache reads and
writes at their own rates, output (reasoning included) at the output rate. Arithmetic is
`Decimal` throughout; nothing is rounded until it is shown or stored (to 1e-9).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

from relaygate.config.models import ModelPrice, PricingConfig
from relaygate.formats.types import Usage

MILLION = Decimal(1_000_000)
NANO = Decimal("0.000000001")
ZERO = Decimal(0)

# Which catalog sections may price a provider type (first match wins).
_SECTIONS: dict[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "azure-openai": ("openai",),
    "anthropic": ("anthropic",),
    "bedrock": ("bedrock", "anthropic", "mistral"),
    "gemini": ("gemini",),
    "vertex": ("gemini", "anthropic", "mistral"),
    "openai-compatible": ("openai", "mistral", "anthropic", "gemini"),
    "mock": ("mock",),
}
_ALL_SECTIONS = ("openai", "anthropic", "bedrock", "gemini", "mistral", "mock")

# Bedrock ids: `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, `anthropic.claude-3-haiku-...`
_BEDROCK_GEO = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.")
_VENDOR = re.compile(r"^(anthropic|mistral|meta|amazon|cohere|ai21|google)\.")
_VERSION = re.compile(r"-v\d+(:\d+)?$")
_DATE = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|-\d{4}|-latest|@\d{8})$")


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million tokens, in force from `effective_from`."""

    effective_from: date
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    batch_discount: Decimal = ZERO
    long_threshold: int | None = None
    long_rate: Rate | None = None

    def for_prompt(self, input_tokens: int) -> Rate:
        if self.long_rate is not None and self.long_threshold is not None and input_tokens > self.long_threshold:
            return self.long_rate
        return self

    def scaled(self, factor: Decimal) -> Rate:
        long = self.long_rate.scaled(factor) if self.long_rate is not None else None
        return replace(self, input=self.input * factor, output=self.output * factor,
                       cache_read=self.cache_read * factor, cache_write=self.cache_write * factor, long_rate=long)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    section: str
    model: str
    rates: tuple[Rate, ...]  # sorted by effective_from
    geo_premium: Decimal = ZERO

    def rate_at(self, day: date) -> Rate | None:
        chosen: Rate | None = None
        for rate in self.rates:
            if rate.effective_from <= day:
                chosen = rate
        return chosen or (self.rates[0] if self.rates else None)


def normalise_model(model: str) -> tuple[str, bool]:
    """The catalog name of a provider's model id, and whether it is a Bedrock geographic
    inference profile (`us.`, `eu.`, ...; `global.` is not)."""
    name = model.strip().lower()
    if name.startswith("models/"):
        name = name[len("models/"):]
    if "/" in name:  # `publishers/anthropic/models/claude...` or `vendor/model`
        name = name.rsplit("/", 1)[-1]
    geo = False
    m = _BEDROCK_GEO.match(name)
    if m:
        geo = m.group(1) != "global"
        name = name[m.end():]
    name = _VENDOR.sub("", name)
    name = _VERSION.sub("", name)
    while True:
        stripped = _DATE.sub("", name)
        if stripped == name:
            break
        name = stripped
    return name, geo


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _rate(raw: dict[str, Any], batch: Decimal) -> Rate:
    inp = _dec(raw["input"])
    long = raw.get("long_context")
    long_rate = _rate({"effective_from": raw["effective_from"], **long}, batch) if long else None
    return Rate(
        effective_from=date.fromisoformat(raw["effective_from"]),
        input=inp,
        output=_dec(raw.get("output", 0)),
        cache_read=_dec(raw.get("cache_read", inp)),
        cache_write=_dec(raw.get("cache_write", inp)),
        batch_discount=batch,
        long_threshold=int(long["threshold"]) if long else None,
        long_rate=long_rate,
    )


def load_catalog(raw: dict[str, Any] | None = None) -> list[CatalogEntry]:
    """The shipped catalog (or `raw` in the same shape)."""
    if raw is None:
        raw = json.loads(resources.files("relaygate.usage").joinpath("catalog.json").read_text())
    entries = []
    for e in raw["models"]:
        batch = _dec(e.get("batch_discount", 0))
        rates = tuple(sorted((_rate(r, batch) for r in e["rates"]), key=lambda r: r.effective_from))
        entries.append(CatalogEntry(e["provider"], e["model"], rates, _dec(e.get("geo_premium", 0))))
    return entries


class Pricing:
    """Prices requests: `cost(...)` for what was used, `max_cost(...)` for what a request
    may use at most (budget checks before the call). Lives in `gw.services["pricing"]`."""

    def __init__(self, overrides: PricingConfig | None = None, catalog: list[CatalogEntry] | None = None) -> None:
        self.entries = catalog if catalog is not None else load_catalog()
        self._by_section: dict[str, dict[str, CatalogEntry]] = {}
        for entry in self.entries:
            self._by_section.setdefault(entry.section, {})[entry.model] = entry
        self.overrides: dict[str, ModelPrice] = {k.lower(): v for k, v in (overrides.models if overrides else {}).items()}
        # rate lookups normalise names with regexes: memoised per (type, account, model, day)
        self._rates: dict[tuple[str, str, str, date], Rate | None] = {}

    def entry(self, provider_type: str, model: str) -> tuple[CatalogEntry | None, bool]:
        """The catalog entry for a model (exact name, then the longest catalog name it
        starts with at a `-` boundary, so `gpt-4o-2024-08-06` finds `gpt-4o`)."""
        name, geo = normalise_model(model)
        for section in _SECTIONS.get(provider_type, _ALL_SECTIONS):
            models = self._by_section.get(section, {})
            if name in models:
                return models[name], geo
            best = max((m for m in models if name.startswith(m + "-")), key=len, default=None)
            if best is not None:
                return models[best], geo
            if "*" in models:
                return models["*"], geo
        return None, geo

    def rate(self, provider_type: str, provider: str, model: str, at: datetime | date | None = None) -> Rate | None:
        """The rate in force at `at` (default now) with config overrides applied;
        None when neither the catalog nor the config knows the model."""
        day = _day(at)
        key = (provider_type, provider, model, day)
        if key in self._rates:
            return self._rates[key]
        if len(self._rates) > 10_000:
            self._rates.clear()
        rate = self._rates[key] = self._lookup(provider_type, provider, model, day)
        return rate

    def _lookup(self, provider_type: str, provider: str, model: str, day: date) -> Rate | None:
        entry, geo = self.entry(provider_type, model)
        base: Rate | None = None
        if entry is not None:
            base = entry.rate_at(day)
            if base is not None and geo and entry.geo_premium:
                base = base.scaled(1 + entry.geo_premium)
        return self._override(base, provider_type, provider, model)

    def _override(self, base: Rate | None, provider_type: str, provider: str, model: str) -> Rate | None:
        raw = model.lower()
        norm, _ = normalise_model(model)
        candidates = {raw, norm}
        for p in {provider.lower(), provider_type.lower()}:
            candidates |= {f"{p}/{raw}", f"{p}/{norm}"}
        matches = sorted((k for k in candidates if k in self.overrides), key=len)
        if not matches:
            return base
        rate = base
        for key in matches:  # shorter first, so the longer match wins per price it names
            o = self.overrides[key]
            if rate is None:
                inp = _dec(o.input_per_mtok or 0)
                rate = Rate(date.min, inp, ZERO, inp, inp)
            rate = replace(
                rate,
                input=_dec(o.input_per_mtok) if o.input_per_mtok is not None else rate.input,
                output=_dec(o.output_per_mtok) if o.output_per_mtok is not None else rate.output,
                cache_read=_dec(o.cache_read_per_mtok) if o.cache_read_per_mtok is not None else rate.cache_read,
                cache_write=_dec(o.cache_write_per_mtok) if o.cache_write_per_mtok is not None else rate.cache_write,
                long_rate=None,  # an override is the price, whatever the prompt size
            )
        return rate

    def cost(self, provider_type: str, provider: str, model: str, usage: Usage,
             at: datetime | date | None = None, batch: bool = False) -> Decimal | None:
        """The exact price of `usage`; None when the model has no price."""
        rate = self.rate(provider_type, provider, model, at)
        if rate is None:
            return None
        return price(rate, usage, batch)

    def max_cost(self, provider_type: str, provider: str, model: str, input_tokens: int,
                 max_output_tokens: int) -> Decimal:
        """The most a request can cost: every input token uncached (cache writes when
        they cost more), every allowed output token. Zero for models with no price."""
        rate = self.rate(provider_type, provider, model)
        if rate is None:
            return ZERO
        rate = rate.for_prompt(input_tokens)
        per_input = max(rate.input, rate.cache_write)
        return (per_input * input_tokens + rate.output * max_output_tokens) / MILLION


def price(rate: Rate, usage: Usage, batch: bool = False) -> Decimal:
    rate = rate.for_prompt(usage.input_tokens)
    uncached = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
    total = (
        rate.input * uncached
        + rate.cache_read * usage.cache_read_tokens
        + rate.cache_write * usage.cache_write_tokens
        + rate.output * usage.output_tokens
    ) / MILLION
    if batch and rate.batch_discount:
        total *= 1 - rate.batch_discount
    return total


def _day(at: datetime | date | None) -> date:
    if at is None:
        return datetime.now(UTC).date()
    if isinstance(at, datetime):
        return at.astimezone(UTC).date() if at.tzinfo else at.date()
    return at
