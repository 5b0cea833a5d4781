from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import httpx


def test_cli_serves_with_seeded_faults() -> None:
    """The real command in its own process (uvloop), announcing its port with --json."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaygate.mock_upstream.cli", "--port", "0", "--json",
         "--fail-rate", "0.5", "--fail-codes", "502", "--seed", "11"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        announced = json.loads(proc.stdout.readline())
        assert announced["faults"]["fail_codes"] == [502]
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(base_url=announced["url"], headers={"Authorization": "Bearer k"}) as http:
            statuses = Counter(http.post("/v1/chat/completions", json=body).status_code for _ in range(100))
        assert set(statuses) == {200, 502}
        assert 30 <= statuses[502] <= 70
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_rejects_bad_rates() -> None:
    result = subprocess.run([sys.executable, "-m", "relaygate.mock_upstream.cli", "--fail-rate", "2"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "fail_rate" in result.stderr
