"""Config loading: interpolation, shapes, and error messages that name the exact path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from relaygate.config import ConfigError, default_config, load_config, parse_config
from relaygate.config.loader import _protect_env, route_from_object

DESIGN_EXAMPLE = """
server: {host: 127.0.0.1, port: 8080, master_key: ${RELAYGATE_MASTER_KEY}}
state:
  database_url: sqlite:///./.relaygate/relaygate.db
  redis_url: null
providers:
  anthropic-main: {type: anthropic, api_key: ${ANTHROPIC_API_KEY}}
  bedrock-us:     {type: bedrock, region: us-east-1}
  openai-main:    {type: openai, api_key: ${OPENAI_API_KEY}}
  local:          {type: openai-compatible, base_url: http://127.0.0.1:11434/v1}
routes:
  claude-sonnet:
    strategy: {mode: fallback, on_status_codes: [429, 500, 502, 503, 504]}
    targets:
      - {provider: anthropic-main, model: claude-sonnet-4-5}
      - {provider: bedrock-us, model: us.anthropic.claude-sonnet-4-5-v1:0}
      - {provider: anthropic-main, model: claude-3-7-sonnet-latest}
      - {provider: bedrock-us, model: us.anthropic.claude-3-7-sonnet-v1:0}
  balanced:
    strategy: {mode: loadbalance}
    targets:
      - weight: 0.5
        strategy: {mode: fallback}
        targets: [{provider: anthropic-main, model: claude-sonnet-4-5}, {provider: openai-main, model: gpt-4o}]
      - {weight: 0.5, provider: openai-main, model: gpt-4o, override_params: {temperature: 0.2}}
retry: {attempts: 2, on_status_codes: [429, 502, 503, 504], backoff: {base_ms: 200, max_ms: 8000, jitter: 0.25}}
timeouts: {connect_ms: 2000, first_byte_ms: 30000, total_ms: 600000}
circuit_breaker: {failure_threshold: 5, window_s: 30, cooldown_s: 60}
cache: {exact: {enabled: true, ttl_s: 3600}, semantic: {enabled: false, threshold: 0.95}}
"""


def test_the_design_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    path = tmp_path / "c.yaml"
    path.write_text(DESIGN_EXAMPLE)
    cfg = load_config(path)
    assert cfg.providers["anthropic-main"].api_key is not None
    assert cfg.providers["anthropic-main"].api_key.get_secret_value() == "sk-ant-secret"
    assert "sk-ant-secret" not in repr(cfg)  # secrets never print
    nested = cfg.routes["balanced"].targets[0]
    assert nested.strategy is not None and nested.strategy.mode == "fallback" and nested.targets is not None
    assert cfg.retry.attempts == 2


def _raw() -> dict:  # type: ignore[type-arg]
    text, _ = _protect_env(DESIGN_EXAMPLE)  # the ${...} references become plain tokens
    return yaml.safe_load(text)


def _problems(raw: dict) -> list[str]:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    return err.value.problems


def test_unknown_provider_names_the_exact_path() -> None:
    raw = _raw()
    raw["routes"]["claude-sonnet"]["targets"][2]["provider"] = "bedrok"
    problems = _problems(raw)
    assert problems[0].startswith("routes.claude-sonnet.targets[2].provider: unknown provider 'bedrok'")


def test_nested_errors_and_typos_are_all_reported_at_once() -> None:
    raw = _raw()
    raw["routes"]["balanced"]["targets"][0]["targets"][1]["provider"] = "nope"
    raw["retry"]["attempts"] = -1
    raw["circuit_breaker"]["treshold"] = 3
    problems = _problems(raw)
    assert "retry.attempts: Input should be greater than or equal to 0" in problems
    assert "circuit_breaker.treshold: unknown key" in problems
    raw = _raw()
    raw["routes"]["balanced"]["targets"][0]["targets"][1]["provider"] = "nope"
    assert any(p.startswith("routes.balanced.targets[0].targets[1].provider: unknown provider 'nope'")
               for p in _problems(raw))


def test_weights_and_modes_are_checked() -> None:
    raw = _raw()
    for t in raw["routes"]["balanced"]["targets"]:
        t["weight"] = 0
    assert any("loadbalance needs at least one target with weight > 0" in p for p in _problems(raw))
    raw = _raw()
    raw["routes"]["claude-sonnet"]["strategy"] = "single"
    assert any("'single' takes one target" in p for p in _problems(raw))
    raw = _raw()
    raw["routes"]["claude-sonnet"]["strategy"] = "roundrobin"
    assert any(p.startswith("routes.claude-sonnet.strategy.mode") for p in _problems(raw))


def test_bare_string_strategy_and_conditional_references() -> None:
    raw = _raw()
    raw["routes"]["cond"] = {
        "strategy": {"mode": "conditional", "conditions": [{"query": {"metadata.plan": "paid"}, "then": "fast"}],
                     "default": "missing"},
        "targets": [{"name": "fast", "provider": "local", "model": "a"}],
    }
    assert "routes.cond.strategy.default: no target named 'missing'" in _problems(raw)


def test_env_interpolation_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_FROM_ENV", "9999")
    warnings: list[str] = []
    cfg = parse_config({"server": {"port": "${PORT_FROM_ENV}", "host": "${NOPE_HOST:-0.0.0.0}"},
                        "providers": {"o": {"type": "openai", "api_key": "${NOT_SET_ANYWHERE}"}}}, warnings=warnings)
    assert cfg.server.port == 9999 and cfg.server.host == "0.0.0.0"
    assert cfg.providers["o"].api_key is None
    assert warnings == ["providers.o.api_key: environment variable NOT_SET_ANYWHERE is not set"]


def test_default_config_has_mock_and_env_providers() -> None:
    cfg = default_config({"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"})
    assert {"mock", "openai", "anthropic"} <= set(cfg.providers)
    assert "mock" in cfg.routes and "gpt-4o" in cfg.routes and "claude-sonnet-4-5" in cfg.routes
    assert set(default_config({}).providers) == {"mock"}


def test_portkey_style_config_object() -> None:
    cfg = parse_config(_raw())
    route = route_from_object({"strategy": {"mode": "fallback"}, "targets": [
        {"provider": "openai", "override_params": {"model": "gpt-4o", "temperature": 0}},
        {"provider": "anthropic-main", "override_params": {"model": "claude"}}]}, cfg.providers)
    assert route.targets[0].provider == "openai-main" and route.targets[0].model == "gpt-4o"
    assert route.targets[0].override_params == {"temperature": 0}


def test_cli_validate_exits_1_with_path_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DESIGN_EXAMPLE.replace("provider: bedrock-us, model: us.anthropic.claude-3-7", "provider: bedrok, model: x"))
    run = subprocess.run([sys.executable, "-m", "relaygate.cli", "config", "validate", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "routes.claude-sonnet.targets[3].provider: unknown provider 'bedrok'" in run.stderr
    assert "Traceback" not in run.stderr
    good = tmp_path / "good.yaml"
    good.write_text(DESIGN_EXAMPLE)
    ok = subprocess.run([sys.executable, "-m", "relaygate.cli", "config", "validate", str(good)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes: [\n")
    run = subprocess.run([sys.executable, "-m", "relaygate.cli", "config", "validate", str(broken)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "(yaml) line" in run.stderr
