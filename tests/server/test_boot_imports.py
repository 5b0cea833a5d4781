"""`relaygate serve` with the default config loads no library that only an unconfigured
feature needs: each of these costs 10-25 MB of idle RSS (the acceptance bound is 80 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# feature -> what it needs: Bedrock (botocore), `relaygate sandbox` (jupyter_client, zmq,
# tornado, traitlets), Redis (redis-py, which pulls in OpenTelemetry, psutil and
# cryptography), PostgreSQL (asyncpg), RELAYGATE_SECRET_KEY (cryptography), the admin CLIs
# (httpx, rich), tracing (opentelemetry), the semantic cache (numpy)
NOT_AT_BOOT = ("botocore", "jupyter_client", "zmq", "tornado", "traitlets", "redis", "opentelemetry", "psutil",
               "cryptography", "asyncpg", "httpx", "rich", "pygments", "urllib3", "numpy", "mcp")

BOOT = """
import asyncio, json, os, sys
from relaygate.cli import app, _load  # what the `relaygate` entry point imports
from relaygate.server.app import build_app
from relaygate.server.bootstrap import build_gateway
from relaygate.server.run import ensure_master_key

cfg = _load(None)
ensure_master_key(cfg)

async def main():
    gw = await build_gateway(cfg)
    build_app(gw)

asyncio.run(main())
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
sys.stdout.flush()
os._exit(0)
"""


def test_serve_with_the_default_config_imports_no_optional_feature(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", BOOT], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "aiohttp" in loaded and "relaygate" in loaded
    assert sorted(loaded & set(NOT_AT_BOOT)) == []
