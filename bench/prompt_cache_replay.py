"""Replays a 60-turn agent conversation through a real `relaygate serve` process against the
mock Anthropic upstream (`relaygate mock-upstream`, which simulates prompt caching) and
prints the input tokens paid with the gateway's breakpoints and without them.

Paid input tokens weigh Anthropic's 5-minute cache prices: uncached x1, cache writes x1.25,
cache reads x0.1. Three runs of the same conversation:
  plain      route without prompt_caching
  cached     route with prompt_caching: true
  restamped  as cached, but the client re-renders every tool result's timestamp and
             request id each turn (canonicalisation keeps the prefix stable anyway)

    .venv/bin/python bench/prompt_cache_replay.py [--turns 60]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

MASTER = "sk-bench-cache"
RELAYGATE = [sys.executable, "-m", "relaygate.cli"]
WRITE_PRICE, READ_PRICE = 1.25, 0.1

SYSTEM = (
    "You are a research agent working for an operations team. Use the tools to gather facts, "
    "cite the tool results you rely on, never invent numbers, and stop when the task is done. "
) * 12
TOOLS = [
    {"name": name, "description": f"{desc} " * 6,
     "input_schema": {"type": "object", "properties": {"query": {"type": "string", "description": "what to look up"},
                                                       "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
                      "required": ["query"]}}
    for name, desc in [("search_docs", "Full-text search over the internal documentation."),
                       ("get_ticket", "Reads one support ticket with its history."),
                       ("query_metrics", "Runs a PromQL query over the last 24 hours."),
                       ("read_file", "Reads a file from the incident repository."),
                       ("list_deploys", "Lists the deployments of a service."),
                       ("page_oncall", "Pages the on-call engineer of a team.")]
]
TASK = ("Investigate why checkout latency rose last night. Here is the incident log:\n"
        + "\n".join(f"2026-11-22T0{i % 10}:{i % 60:02d}:00Z checkout-api p99={300 + i * 7}ms "
                    f"errors={i % 5} region=eu-west-{i % 3 + 1}" for i in range(120)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before answering {url}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(url)


@contextmanager
def process(args: list[str], url: str, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, env={**os.environ})
        try:
            wait_http(url, proc)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tool_result(turn: int, stamp: int) -> str:
    return json.dumps({
        "timestamp": f"2026-11-23T10:{stamp % 60:02d}:{turn % 60:02d}Z",
        "request_id": f"req-{stamp}-{turn}",
        "elapsed_ms": 17 + stamp % 13,
        "results": [{"title": f"finding {turn}.{k}", "detail": f"latency on shard {k} was {200 + turn * k}ms",
                     "score": round(1 / (k + 1), 3)} for k in range(6)],
    })


def conversation(turns: int, restamp: int | None) -> list[dict[str, Any]]:
    """The history a client sends at `turns` rounds; `restamp` re-renders volatile fields."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    for t in range(turns):
        tool = TOOLS[t % len(TOOLS)]["name"]
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Step {t}: checking {tool}."},
            {"type": "tool_use", "id": f"toolu_{t:03d}", "name": tool, "input": {"query": f"checkout step {t}"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{t:03d}",
             "content": tool_result(t, t if restamp is None else restamp)}]})
    return messages


def replay(gateway: str, route: str, turns: int, restamp: bool) -> dict[str, int]:
    totals = {"uncached": 0, "write": 0, "read": 0}
    with httpx.Client(base_url=gateway, timeout=30, headers={"x-api-key": MASTER}) as client:
        for t in range(turns):
            body = {"model": route, "max_tokens": 200, "system": SYSTEM, "tools": TOOLS,
                    "messages": conversation(t + 1, t * 7 if restamp else None)}
            r = client.post("/v1/messages", json=body)
            r.raise_for_status()
            u = r.json()["usage"]
            totals["uncached"] += u["input_tokens"]
            totals["write"] += u.get("cache_creation_input_tokens") or 0
            totals["read"] += u.get("cache_read_input_tokens") or 0
    return totals


def paid(t: dict[str, int]) -> float:
    return t["uncached"] + WRITE_PRICE * t["write"] + READ_PRICE * t["read"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        up_port, gw_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        target = {"provider": "claude", "model": "claude-sonnet-4-5"}
        cfg = {
            "server": {"port": gw_port, "master_key": MASTER},
            "state": {"database_url": f"sqlite:///{tmp}/rg.db", "journal_dir": f"{tmp}/journal"},
            "providers": {"claude": {"type": "anthropic", "api_key": "sk-mock", "base_url": upstream}},
            "routes": {"plain": {"targets": [target]},
                       "cached": {"prompt_caching": True, "targets": [target]},
                       # another model: its own upstream cache scope, nothing read from "cached"
                       "restamped": {"prompt_caching": True,
                                     "targets": [{**target, "model": "claude-haiku-4-5"}]}},
        }
        (tmp / "rg.yaml").write_text(yaml.safe_dump(cfg))
        gateway = f"http://127.0.0.1:{gw_port}"
        with process([*RELAYGATE, "mock-upstream", "--port", str(up_port)], f"{upstream}/_mock/stats",
                     tmp / "upstream.log"), \
             process([*RELAYGATE, "serve", "--config", str(tmp / "rg.yaml")], f"{gateway}/health",
                     tmp / "gateway.log"):
            runs = {
                "plain": replay(gateway, "plain", args.turns, restamp=False),
                "cached": replay(gateway, "cached", args.turns, restamp=False),
                "restamped": replay(gateway, "restamped", args.turns, restamp=True),
            }
    base = paid(runs["plain"])
    print(f"{args.turns}-turn agent conversation through relaygate -> mock Anthropic upstream")
    print(f"{'run':<10} {'uncached':>10} {'cache_write':>12} {'cache_read':>11} {'paid (weighted)':>16} {'ratio':>7}")
    for name, t in runs.items():
        print(f"{name:<10} {t['uncached']:>10} {t['write']:>12} {t['read']:>11} {paid(t):>16.0f} "
              f"{paid(t) / base:>7.3f}")
    print(f"paid input tokens with breakpoints / without: {paid(runs['cached']) / base:.3f}")


if __name__ == "__main__":
    main()
