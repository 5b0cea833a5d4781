"""Admin endpoints on a real gateway process: config reload, live request log, the UI."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from tests.e2e.procs import MASTER, gateway

AUTH = {"authorization": f"Bearer {MASTER}"}


def chat(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=10,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_reload_swaps_routes_and_refuses_a_broken_config(tmp_path: Path) -> None:
    config = {"providers": {"mock": {"type": "mock"}},
              "routes": {"first": {"targets": [{"provider": "mock", "model": "m1"}]}}}
    with gateway(config, tmp_path) as url:
        assert chat(url, "first").status_code == 200
        assert chat(url, "second").status_code == 404
        path = next(tmp_path.glob("config-*.yaml"))
        cfg = yaml.safe_load(path.read_text())
        cfg["routes"]["second"] = {"targets": [{"provider": "mock", "model": "m2"}]}
        path.write_text(yaml.safe_dump(cfg))
        resp = httpx.post(f"{url}/admin/config/reload", headers=AUTH, timeout=10)
        assert resp.status_code == 200 and resp.json()["routes"] == ["first", "second"]
        assert chat(url, "second").headers["x-relaygate-model"] == "m2"
        cfg["routes"]["second"]["targets"][0]["provider"] = "nope"
        path.write_text(yaml.safe_dump(cfg))
        bad = httpx.post(f"{url}/admin/config/reload", headers=AUTH, timeout=10)
        assert bad.status_code == 400 and "unknown provider 'nope'" in bad.json()["error"]["message"]
        assert chat(url, "second").status_code == 200  # the old routes keep serving
        log = httpx.get(f"{url}/admin/requests?limit=3", headers=AUTH, timeout=10).json()["data"]
        assert [e["route"] for e in log][:2] == ["second", "second"] and log[0]["status"] == 200
        assert httpx.get(f"{url}/admin/requests", timeout=10).status_code == 401
        page = httpx.get(f"{url}/ui", timeout=10)
        assert page.status_code == 200 and "Live requests" in page.text and "/admin/usage" in page.text
