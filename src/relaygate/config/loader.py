"""Loading the config: YAML -> `${ENV}` interpolation -> typed models -> cross-checks.

Every problem is reported with its exact path (`routes.x.targets[2].provider: ...`), all
at once, so one `relaygate config validate` run shows everything to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from relaygate.config.models import GatewayConfig, ProviderConfig, RouteConfig, TargetConfig

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """Invalid configuration: `problems` holds one `path: message` line per error."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


def format_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def interpolate(value: Any, warnings: list[str], path: str = "") -> Any:
    """Replaces `${VAR}` / `${VAR:-default}` in strings. A value that is exactly one unset
    `${VAR}` becomes null (with a warning), so an example config validates without keys."""
    if isinstance(value, dict):
        return {k: interpolate(v, warnings, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, warnings, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _ENV.fullmatch(value)
    if whole and whole.group(2) is None and whole.group(1) not in os.environ:
        warnings.append(f"{path}: environment variable {whole.group(1)} is not set")
        return None

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            warnings.append(f"{path}: environment variable {name} is not set")
        return default or ""

    return _ENV.sub(sub, value)


def _pydantic_problems(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [p for p in prefix + tuple(err["loc"]) if not (isinstance(p, str) and "[" in p and "-" in p)]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{format_path(loc)}: {msg}")
    return problems


def _check_targets(
    targets: list[TargetConfig], mode: str, path: str, providers: dict[str, ProviderConfig],
    names: dict[str, str], conditions: list[Any], default: str | None, problems: list[str],
) -> None:
    if not targets:
        problems.append(f"{path}.targets: at least one target is required")
        return
    if mode == "single" and len(targets) > 1:
        problems.append(f"{path}.strategy.mode: 'single' takes one target, got {len(targets)}")
    if mode == "loadbalance" and not any(t.weight > 0 for t in targets):
        problems.append(f"{path}.targets: loadbalance needs at least one target with weight > 0")
    local_names = {t.name for t in targets if t.name}
    if mode == "conditional":
        for i, cond in enumerate(conditions):
            if cond.then not in local_names:
                problems.append(f"{path}.strategy.conditions[{i}].then: no target named {cond.then!r}")
        if default is not None and default not in local_names:
            problems.append(f"{path}.strategy.default: no target named {default!r}")
    for i, t in enumerate(targets):
        here = f"{path}.targets[{i}]"
        if t.targets is not None:
            strategy = t.strategy
            _check_targets(t.targets, strategy.mode if strategy else "fallback", here, providers, names,
                           strategy.conditions if strategy else [], strategy.default if strategy else None,
                           problems)
        elif t.provider is not None and t.provider not in providers:
            problems.append(f"{here}.provider: unknown provider {t.provider!r}"
                            + (f" (known: {', '.join(sorted(providers))})" if providers else ""))
        elif t.provider is not None and not t.model and providers[t.provider].type != "mock":
            problems.append(f"{here}.model: a target needs 'model'")


def check_routes(cfg: GatewayConfig) -> list[str]:
    problems: list[str] = []
    for name, route in cfg.routes.items():
        s = route.strategy
        _check_targets(route.targets, s.mode, f"routes.{name}", cfg.providers, {}, s.conditions, s.default,
                       problems)
    return problems


def parse_config(raw: Any, source: str = "config", warnings: list[str] | None = None) -> GatewayConfig:
    """Validates an already-loaded YAML/JSON tree into a `GatewayConfig`."""
    warnings = warnings if warnings is not None else []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): the config must be a mapping"], source)
    raw = interpolate(raw, warnings)
    try:
        cfg = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc), source) from None
    problems = check_routes(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


_PLACEHOLDER = re.compile(r"__rgenv(\d+)__")


def _protect_env(text: str) -> tuple[str, list[str]]:
    """`{master_key: ${KEY}}` is not valid YAML (a `{` inside a flow mapping), yet it is
    how configs are written: references are swapped for plain tokens before parsing."""
    found: list[str] = []

    def swap(m: re.Match[str]) -> str:
        found.append(m.group(0))
        return f"__rgenv{len(found) - 1}__"

    return _ENV.sub(swap, text), found


def _restore_env(value: Any, found: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _restore_env(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_env(v, found) for v in value]
    if isinstance(value, str) and "__rgenv" in value:
        return _PLACEHOLDER.sub(lambda m: found[int(m.group(1))], value)
    return value


def load_config(path: str | Path, warnings: list[str] | None = None) -> GatewayConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {p}: {exc.strerror}"], str(p)) from None
    text, found = _protect_env(text)
    try:
        raw = _restore_env(yaml.safe_load(text), found)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError([f"(yaml) {where}: {getattr(exc, 'problem', exc)}"], str(p)) from None
    return parse_config(raw, str(p), warnings)


_ENV_PROVIDERS = (
    ("OPENAI_API_KEY", "openai", {"type": "openai", "api_key": "${OPENAI_API_KEY}"},
     ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"]),
    ("ANTHROPIC_API_KEY", "anthropic", {"type": "anthropic", "api_key": "${ANTHROPIC_API_KEY}"},
     ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]),
    ("GEMINI_API_KEY", "gemini", {"type": "gemini", "api_key": "${GEMINI_API_KEY}"},
     ["gemini-2.5-pro", "gemini-2.5-flash"]),
)


def default_config(env: dict[str, str] | None = None) -> GatewayConfig:
    """The embedded default: SQLite + in-memory state, the `mock` provider always, and a
    real provider (with routes named after its common models) for each key in the env."""
    env = dict(os.environ) if env is None else env
    providers: dict[str, Any] = {"mock": {"type": "mock"}}
    routes: dict[str, Any] = {
        "mock": {"targets": [{"provider": "mock", "model": "mock-1"}]},
        "mock-fallback": {"strategy": "fallback",
                          "targets": [{"provider": "mock", "model": "mock-1"},
                                      {"provider": "mock", "model": "mock-2"}]},
    }
    for var, name, spec, models in _ENV_PROVIDERS:
        if env.get(var):
            providers[name] = spec
            for model in models:
                routes[model] = {"targets": [{"provider": name, "model": model}]}
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE"):
        providers["bedrock"] = {"type": "bedrock", "region": env.get("AWS_REGION", "us-east-1")}
        routes["bedrock-claude-sonnet"] = {
            "targets": [{"provider": "bedrock", "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}]}
    raw = {
        "server": {"master_key": "${RELAYGATE_MASTER_KEY:-}"},
        "providers": providers,
        "routes": routes,
    }
    cfg = parse_config(raw, "default config", [])
    if cfg.server.master_key is not None and not cfg.server.master_key.get_secret_value():
        cfg.server.master_key = None
    return cfg


def route_from_object(obj: Any, providers: dict[str, ProviderConfig]) -> RouteConfig:
    """A per-request route (header `x-relaygate-config`, or a key's own config): our route
    shape or a Portkey config object (`override_params.model`, provider given by type)."""
    if not isinstance(obj, dict):
        raise ConfigError(["x-relaygate-config: must be a JSON object"], "x-relaygate-config")
    obj = _portkey_to_route(obj, providers)
    try:
        route = RouteConfig.model_validate(obj)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc), "x-relaygate-config") from None
    problems: list[str] = []
    _check_targets(route.targets, route.strategy.mode, "config", providers, {}, route.strategy.conditions,
                   route.strategy.default, problems)
    if problems:
        raise ConfigError(problems, "x-relaygate-config")
    return route


def _portkey_to_route(obj: dict[str, Any], providers: dict[str, ProviderConfig]) -> dict[str, Any]:
    by_type: dict[str, str] = {}
    for name, p in providers.items():
        by_type.setdefault(p.type, name)

    def target(t: Any) -> Any:
        if not isinstance(t, dict):
            return t
        t = dict(t)
        params = dict(t.pop("override_params", {}) or {})
        if "model" not in t and "model" in params:
            t["model"] = params.pop("model")
        if params:
            t["override_params"] = params
        prov = t.get("provider")
        if isinstance(prov, str) and prov not in providers and prov in by_type:
            t["provider"] = by_type[prov]
        for ignored in ("api_key", "retry", "cache", "custom_host"):
            t.pop(ignored, None)
        if "targets" in t:
            t["targets"] = [target(x) for x in t["targets"]]
        return t

    out = {k: v for k, v in obj.items() if k not in ("retry", "cache", "request_timeout")}
    if "targets" not in out and ("provider" in out or "virtual_key" in out):
        out = {"targets": [target(out)]}
    else:
        out["targets"] = [target(t) for t in out.get("targets", [])]
    return out
