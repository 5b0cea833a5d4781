"""The allow-listed HTTP proxy: the sandbox's only way out, checked per host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from relaygate.agent.sandbox.pool import KernelPool
from relaygate.agent.sandbox.proxy import host_allowed
from relaygate.agent.sandbox.state import open_state_store

from .agent_testkit import make_config


def test_allow_list_matching() -> None:
    allow = ["pypi.org", "*.example.com", "127.0.0.1:8080"]
    assert host_allowed("pypi.org", 443, allow)
    assert host_allowed("PyPI.org.", 80, allow)
    assert not host_allowed("pypi.org", 22, allow)
    assert host_allowed("files.example.com", 443, allow)
    assert not host_allowed("example.com.evil.net", 443, allow)
    assert host_allowed("127.0.0.1", 8080, allow)
    assert not host_allowed("127.0.0.1", 8081, allow)
    assert not host_allowed("localhost", 8080, allow)


@pytest.fixture
async def host_server() -> AsyncIterator[int]:
    """An HTTP server on the host's loopback (unreachable from a sandbox, except by proxy)."""
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the host")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
async def proxied_pool(tmp_path: Path, host_server: int) -> AsyncIterator[KernelPool]:
    config = make_config(tmp_path, proxy={"allow_hosts": [f"127.0.0.1:{host_server}"], "port": 3128})
    pool = KernelPool(config, open_state_store(config.database_url), sandboxed=True)
    await pool.start()
    yield pool
    await pool.close()


async def test_allowed_host_is_reachable_through_the_proxy_only(proxied_pool: KernelPool, host_server: int) -> None:
    code = f"""
import os, socket, urllib.request
print(urllib.request.urlopen('http://127.0.0.1:{host_server}/hello', timeout=10).read().decode())
s = socket.socket()
try:
    s.connect(('127.0.0.1', {host_server}))
    print('DIRECT CONNECTED')
except OSError as exc:
    print('direct refused', type(exc).__name__)
os.environ['HTTP_PROXY']
"""
    result = await proxied_pool.run_cell("net", code, 60)
    assert "hello from the host" in result.text, result.text
    assert "direct refused" in result.text and "DIRECT CONNECTED" not in result.text


async def test_other_hosts_are_refused_by_the_proxy(proxied_pool: KernelPool, host_server: int) -> None:
    code = f"""
import urllib.error, urllib.request
for url in ['http://localhost:{host_server}/hello', 'http://127.0.0.1:{host_server + 1 if host_server < 65535 else 1}/']:
    try:
        urllib.request.urlopen(url, timeout=10)
        print('FETCHED', url)
    except urllib.error.HTTPError as exc:
        print('refused', exc.code)
"""
    result = await proxied_pool.run_cell("net", code, 60)
    assert result.text.count("refused 403") == 2, result.text
    kernel = proxied_pool.kernel("net")
    assert kernel is not None and kernel.proxy is not None and len(kernel.proxy.refused) == 2


async def test_connect_tunnel_is_checked_too(proxied_pool: KernelPool, host_server: int) -> None:
    code = f"""
import socket
def tunnel(target):
    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    s.sendall(f'CONNECT {{target}} HTTP/1.1\\r\\nHost: {{target}}\\r\\n\\r\\n'.encode())
    status = s.recv(4096).split(b'\\r\\n')[0].decode()
    if ' 200 ' in status:
        s.sendall(b'GET /hello HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
        body = b''
        while chunk := s.recv(4096):
            body += chunk
        status += ' | ' + body.decode().split('\\r\\n\\r\\n', 1)[1]
    return status
print(tunnel('127.0.0.1:{host_server}'))
print(tunnel('10.0.0.1:443'))
"""
    result = await proxied_pool.run_cell("net", code, 60)
    lines = result.text.splitlines()
    assert "200" in lines[0] and "hello from the host" in lines[0], result.text
    assert "403" in lines[1], result.text
