"""Failover figures (issue 2 acceptance), with real processes on this machine:

1. Chaos: two mock upstreams each failing 10 % of requests at random (429/503); a 4-level
   fallback route (A/X, B/X, A/Y, B/Y) and a 2-level one (A/X, B/X) over N requests each,
   with the failure rate beside the independent-failure prediction (0.1^levels).
2. A provider hard down (connection refused): once its breaker is open, what a request
   pays for skipping it: p50/p99 through [dead, live] minus through [live] alone.

    .venv/bin/python bench/failover.py [--requests 20000] [--concurrency 32] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relaygate.chaos.load import ChaosSettings, run_chaos  # noqa: E402
from tests.e2e.procs import MASTER, free_port, gateway, mock_upstream  # noqa: E402


def chaos(url: str, model: str, n: int, concurrency: int, stream: bool, wire: str = "openai") -> dict[str, Any]:
    settings = ChaosSettings(gateway=url, requests=n, concurrency=concurrency, model=model, stream=stream,
                             key=MASTER, wire_format=wire)  # type: ignore[arg-type]
    stats = asyncio.run(run_chaos(settings))
    out = stats.as_json()
    out["p50_ms"] = stats.latency_percentile_ms(50)
    out["p99_ms"] = stats.latency_percentile_ms(99)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--fail-rate", type=float, default=0.1)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--format", default="openai", choices=["openai", "anthropic"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rg-failover-"))
    faults = ["--fail-rate", str(args.fail_rate), "--fail-codes", "429,503", "--retry-after-s", "0"]
    with mock_upstream(*faults, "--seed", "1") as a, mock_upstream(*faults, "--seed", "2") as b, \
            mock_upstream() as live:
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
        config = {
            "providers": {
                "A": {"type": "anthropic", "base_url": a, "api_key": "k-a"},
                "B": {"type": "openai-compatible", "base_url": f"{b}/v1", "api_key": "k-b"},
                "dead": {"type": "openai-compatible", "base_url": f"{dead}/v1", "api_key": "k-d"},
                "live": {"type": "openai-compatible", "base_url": f"{live}/v1", "api_key": "k-l"},
            },
            "routes": {
                "four": {"strategy": "fallback", "targets": [
                    {"provider": "A", "model": "model-x"}, {"provider": "B", "model": "model-x"},
                    {"provider": "A", "model": "model-y"}, {"provider": "B", "model": "model-y"}]},
                "two": {"strategy": "fallback", "targets": [
                    {"provider": "A", "model": "model-x"}, {"provider": "B", "model": "model-x"}]},
                "dead-first": {"strategy": "fallback", "targets": [
                    {"provider": "dead", "model": "m"}, {"provider": "live", "model": "m"}]},
                "live-only": {"targets": [{"provider": "live", "model": "m"}]},
            },
        }
        with gateway(config, tmp) as url:
            results: dict[str, Any] = {}
            for route, levels in (("four", 4), ("two", 2)):
                stats = chaos(url, route, args.requests, args.concurrency, args.stream, args.format)
                predicted = args.fail_rate**levels
                stats["predicted_failure_rate"] = predicted
                stats["failure_vs_prediction"] = round(stats["failure_rate"] / predicted, 3) if predicted else None
                results[f"{levels}-level"] = stats
            chaos(url, "dead-first", 200, 8, False)  # opens the dead provider's breaker
            # Alternating rounds, so a change in the machine's other load hits both sides alike;
            # the figure is the median over rounds of (dead-first - live-only).
            rounds = [(chaos(url, "dead-first", 1000, 1, False), chaos(url, "live-only", 1000, 1, False))
                      for _ in range(5)]
            results["breaker_skip"] = {
                "rounds": len(rounds),
                "p50_ms_dead_first": [round(s["p50_ms"], 3) for s, _ in rounds],
                "p50_ms_live_only": [round(b["p50_ms"], 3) for _, b in rounds],
                "skip_cost_p50_ms": round(statistics.median(s["p50_ms"] - b["p50_ms"] for s, b in rounds), 3),
                "skip_cost_p99_ms": round(statistics.median(s["p99_ms"] - b["p99_ms"] for s, b in rounds), 3),
                "failures": sum(s["failed"] for s, _ in rounds),
            }
    print(json.dumps(results, indent=2))
    four, two = results["4-level"], results["2-level"]
    print(f"\n4-level: failure rate {four['failure_rate']:.5f} vs predicted {four['predicted_failure_rate']:.5f}"
          f" (x{four['failure_vs_prediction']}); degraded {four['degraded_rate']:.3f}")
    print(f"2-level: failure rate {two['failure_rate']:.5f} vs predicted {two['predicted_failure_rate']:.5f}"
          f" (x{two['failure_vs_prediction']}); degraded {two['degraded_rate']:.3f}")
    s = results["breaker_skip"]
    print(f"hard-down provider, breaker open: skipping it costs {s['skip_cost_p50_ms']} ms at p50,"
          f" {s['skip_cost_p99_ms']} ms at p99 (median of {s['rounds']} alternating rounds)")


if __name__ == "__main__":
    main()
