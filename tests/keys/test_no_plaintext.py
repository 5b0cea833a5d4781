"""No plaintext virtual key or provider secret in the database file, the logs, or any
error body: a real gateway process (debug logging) with a stored credential, a request
with a wrong key and one whose upstream fails."""

from __future__ import annotations

from pathlib import Path

import httpx

from relaygate.keys.tokens import SECRET_ENV
from tests.e2e import procs

PROVIDER_SECRET = "sk-upstream-PLAINTEXT-7f3a9c"


def test_no_plaintext_anywhere(tmp_path: Path) -> None:
    with procs.mock_upstream() as upstream:
        config = {
            "state": {"database_url": f"sqlite:///{tmp_path}/rg.db", "journal_dir": str(tmp_path / "journal")},
            "providers": {"up": {"type": "openai-compatible", "base_url": f"{upstream}/v1"}},
            "routes": {"broken": {"targets": [{"provider": "up", "model": "fail-503", "virtual_key": "cred-up"}]},
                       "fine": {"targets": [{"provider": "up", "model": "gpt-4o", "virtual_key": "cred-up"}]}},
            "retry": {"attempts": 0},
        }
        env = {SECRET_ENV: "secret-key-for-the-test-0123456789"}
        with procs.gateway(config, tmp_path, "--log-level", "debug", env=env) as url:
            master = {"authorization": f"Bearer {procs.MASTER}"}
            made = httpx.post(f"{url}/admin/keys", json={"name": "victim"}, headers=master)
            assert made.status_code == 201
            key = made.json()["key"]
            cred = httpx.post(f"{url}/admin/credentials", json={"name": "cred-up", "secret": PROVIDER_SECRET},
                              headers=master)
            assert cred.status_code == 201 and PROVIDER_SECRET not in cred.text
            bodies = [cred.text, httpx.get(f"{url}/admin/credentials", headers=master).text,
                      httpx.get(f"{url}/admin/keys", headers=master).text]
            wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
            for token, model, status in ((wrong, "fine", 401), (key, "broken", 503), (key, "fine", 200)):
                resp = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                                  json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
                assert resp.status_code == status, resp.text
                bodies.append(resp.text + str(resp.headers))
            resp = httpx.post(f"{url}/v1/messages", headers={"x-api-key": wrong, "anthropic-version": "2023-06-01"},
                              json={"model": "fine", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
            assert resp.status_code == 401
            bodies.append(resp.text)
        logs = b"".join(p.read_bytes() for p in tmp_path.glob("gateway-*.log"))
        db = b"".join(p.read_bytes() for p in tmp_path.glob("rg.db*"))
        assert b"victim" in db and b"cred-up" in db  # the records are there...
        assert len(logs) > 0
        for secret in (key, wrong, PROVIDER_SECRET, key[3:20]):
            for where, blob in (("database", db), ("logs", logs), ("bodies", "".join(bodies).encode())):
                assert secret.encode() not in blob, f"plaintext found in {where}"
