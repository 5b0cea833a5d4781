"""`relaygate chaos`: load a running gateway and report failures, fallbacks and latency."""

from relaygate.chaos.load import ChaosSettings, ChaosStats, RequestOutcome, run_chaos

__all__ = ["ChaosSettings", "ChaosStats", "RequestOutcome", "run_chaos"]
