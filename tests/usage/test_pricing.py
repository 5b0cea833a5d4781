"""The catalog, config overrides and the pricing rule, checked against hand computations."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from relaygate.config.models import ModelPrice, PricingConfig
from relaygate.formats.types import Usage
from relaygate.usage.pricing import Pricing, load_catalog, normalise_model

D = Decimal


def test_catalog_covers_current_models_of_each_provider() -> None:
    p = Pricing()
    for ptype, model in [
        ("openai", "gpt-4o"), ("openai", "gpt-4o-mini-2024-07-18"), ("openai", "gpt-5"), ("openai", "o3"),
        ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-3-7-sonnet-latest"),
        ("anthropic", "claude-haiku-4-5-20251001"), ("anthropic", "claude-opus-4-1"),
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0"), ("bedrock", "mistral.mistral-large-2407-v1:0"),
        ("gemini", "gemini-2.5-pro"), ("gemini", "models/gemini-2.5-flash"), ("vertex", "gemini-2.0-flash-001"),
        ("openai-compatible", "mistral-large-latest"), ("openai-compatible", "codestral-2501"),
    ]:
        assert p.rate(ptype, "acct", model) is not None, (ptype, model)
    assert p.rate("openai", "acct", "not-a-model") is None


def test_every_catalog_rate_is_dated_and_non_negative() -> None:
    for entry in load_catalog():
        assert entry.rates, entry.model
        for r in entry.rates:
            assert r.effective_from > date(1999, 1, 1)
            assert min(r.input, r.output, r.cache_read, r.cache_write) >= 0


def test_bedrock_ids_normalise_to_catalog_names() -> None:
    assert normalise_model("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == ("claude-sonnet-4-5", True)
    assert normalise_model("global.anthropic.claude-sonnet-4-5-20250929-v1:0") == ("claude-sonnet-4-5", False)
    assert normalise_model("anthropic.claude-3-7-sonnet-20250219-v1:0") == ("claude-3-7-sonnet", False)
    assert normalise_model("gpt-4o-2024-08-06") == ("gpt-4o", False)


def test_seed_example_anthropic_direct_20000_prompt_15000_cache_reads() -> None:
    # 5,000 uncached x $3 + 15,000 reads x $0.30 + 1,000 out x $15, per million:
    # (15,000 + 4,500 + 15,000) / 1e6 = 0.0345
    u = Usage(input_tokens=20_000, output_tokens=1_000, cache_read_tokens=15_000)
    assert Pricing().cost("anthropic", "anthropic-main", "claude-sonnet-4-5", u) == D("0.0345")


def test_seed_example_bedrock_geographic_profile_costs_ten_percent_more() -> None:
    u = Usage(input_tokens=20_000, output_tokens=1_000, cache_read_tokens=15_000)
    p = Pricing()
    assert p.cost("bedrock", "bedrock-us", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", u) == D("0.03795")
    assert p.cost("bedrock", "bedrock-us", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", u) == D("0.0345")


def test_cache_writes_and_reasoning_priced_by_the_rule() -> None:
    # haiku 4.5: in 1, out 5, read 0.10, write 1.25
    u = Usage(input_tokens=10_000, output_tokens=3_000, cache_read_tokens=2_000, cache_write_tokens=4_000,
              reasoning_tokens=2_500)
    want = (D(4_000) * 1 + D(2_000) * D("0.10") + D(4_000) * D("1.25") + D(3_000) * 5) / 1_000_000
    assert Pricing().cost("anthropic", "a", "claude-haiku-4-5", u) == want == D("0.0242")


def test_openai_cached_tokens() -> None:
    # gpt-4o: 2.50 in, 1.25 cached, 10 out. 3,000 prompt of which 1,024 cached, 200 out:
    # (1,976 x 2.50 + 1,024 x 1.25 + 200 x 10) / 1e6 = (4,940 + 1,280 + 2,000) / 1e6
    u = Usage(input_tokens=3_000, output_tokens=200, cache_read_tokens=1_024)
    assert Pricing().cost("openai", "openai-main", "gpt-4o", u) == D("0.00822")


def test_historical_requests_priced_at_the_rate_in_force() -> None:
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    p = Pricing()
    assert p.cost("openai", "o", "o3", u, at=date(2025, 5, 1)) == D(50)
    assert p.cost("openai", "o", "o3", u, at=date(2025, 7, 1)) == D(10)


def test_long_context_tier_prices_the_whole_request() -> None:
    p = Pricing()
    assert p.cost("gemini", "g", "gemini-2.5-pro", Usage(200_000, 0)) == D("0.25")
    assert p.cost("gemini", "g", "gemini-2.5-pro", Usage(200_001, 0)) == D("0.5000025")


def test_exact_to_a_nanodollar() -> None:
    one = Pricing().cost("openai", "o", "gpt-5-nano", Usage(input_tokens=1, output_tokens=1))
    assert one == D("0.00000045")


def test_overrides_name_only_some_prices_and_the_longer_key_wins() -> None:
    cfg = PricingConfig(models={
        "claude-sonnet-4-5": ModelPrice(input_per_mtok=2.0),
        "anthropic-main/claude-sonnet-4-5": ModelPrice(output_per_mtok=10.0),
        "bedrock/claude-sonnet-4-5": ModelPrice(input_per_mtok=1.0),
    })
    p = Pricing(cfg)
    r = p.rate("anthropic", "anthropic-main", "claude-sonnet-4-5-20250929")
    assert r is not None
    assert (r.input, r.output, r.cache_read, r.cache_write) == (D("2.0"), D("10.0"), D("0.30"), D("3.75"))
    other = p.rate("anthropic", "anthropic-backup", "claude-sonnet-4-5")
    assert other is not None and other.output == D(15)
    # provider type works as the provider part too, and beats the bare model name
    b = p.rate("bedrock", "bedrock-us", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert b is not None and b.input == D("1.0")


def test_override_prices_a_model_the_catalog_lacks() -> None:
    p = Pricing(PricingConfig(models={"my-llama": ModelPrice(input_per_mtok=0.2, output_per_mtok=0.4)}))
    assert p.cost("openai-compatible", "local", "my-llama", Usage(1_000_000, 1_000_000)) == D("0.6")


def test_max_cost_assumes_no_cache_and_every_output_token() -> None:
    p = Pricing()
    # sonnet 4.5: cache writes (3.75) cost more than input (3): the worst case uses them
    assert p.max_cost("anthropic", "a", "claude-sonnet-4-5", 1_000, 1_000) == D("0.01875")
    assert p.max_cost("openai", "o", "gpt-4o", 1_000, 1_000) == D("0.0125")
    assert p.max_cost("openai", "o", "unknown-model", 1_000, 1_000) == D(0)
