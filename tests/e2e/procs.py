"""Starting relaygate's real processes (gateway, mock upstream) for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

RELAYGATE = [sys.executable, "-m", "relaygate.cli"]
MASTER = "sk-e2e-master"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering {url}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def process(args: list[str], url: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=out, stderr=out)
    try:
        wait_http(url, proc=proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def mock_upstream(*flags: str, log: Path | None = None) -> Iterator[str]:
    """`relaygate mock-upstream` on a free port; yields its base URL (no /v1)."""
    port = free_port()
    with process([*RELAYGATE, "mock-upstream", "--port", str(port), *flags],
                 f"http://127.0.0.1:{port}/_mock/stats", log=log):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def gateway(config: dict[str, Any], tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`relaygate serve` with this config (master key `sk-e2e-master`); yields its URL."""
    port = free_port()
    cfg = dict(config)
    cfg.setdefault("server", {})
    cfg["server"] = {"master_key": MASTER, **cfg["server"], "port": port}
    cfg.setdefault("state", {"database_url": f"sqlite:///{tmp_path}/rg.db", "journal_dir": f"{tmp_path}/journal"})
    path = tmp_path / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with process([*RELAYGATE, "serve", "--config", str(path), *extra], f"http://127.0.0.1:{port}/health",
                 env=env, cwd=tmp_path, log=tmp_path / f"gateway-{port}.log"):
        yield f"http://127.0.0.1:{port}"
