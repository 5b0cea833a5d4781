"""The config file: typed models, `${ENV}` interpolation, path-precise validation."""

from relaygate.config.loader import ConfigError, default_config, load_config, parse_config
from relaygate.config.models import GatewayConfig, RouteConfig, StrategyConfig, TargetConfig

__all__ = [
    "ConfigError", "GatewayConfig", "RouteConfig", "StrategyConfig", "TargetConfig",
    "default_config", "load_config", "parse_config",
]
