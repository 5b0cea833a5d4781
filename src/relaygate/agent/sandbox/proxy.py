"""The only way out of a sandbox: an HTTP proxy that forwards to allow-listed hosts.

A sandbox has no network, only its own loopback. When `sandbox.proxy` is configured, the
kernel process starts a tiny forwarder thread listening on the sandbox's 127.0.0.1:PORT
(`HTTP_PROXY`/`HTTPS_PROXY` point there) that relays each connection to a unix socket in the
thread's run directory. Outside the sandbox, `AllowListProxy` answers on that socket:
`CONNECT host:port` (HTTPS) and absolute-URI requests (plain HTTP), each checked against the
allow-list before the server opens the upstream connection from the host's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("relaygate.sandbox.proxy")

# Runs inside the sandbox (no relaygate there): relay 127.0.0.1:PORT <-> unix socket, then
# hand over to ipykernel. Kept to the standard library.
FORWARDER = r"""
import os, runpy, socket, sys, threading
def _pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
def _serve(port, path):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.connect(path)
        except OSError:
            client.close()
            continue
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
_port, _path = int(sys.argv[1]), sys.argv[2]
threading.Thread(target=_serve, args=(_port, _path), daemon=True, name="relaygate-proxy").start()
sys.argv = ["ipykernel_launcher"] + sys.argv[3:]
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""


def host_allowed(host: str, port: int, allow: list[str]) -> bool:
    """`allow` entries: `example.com` (ports 80 and 443), `*.example.com` (subdomains),
    or either form with `:port` for one explicit port."""
    host = host.lower().rstrip(".")
    for entry in allow:
        name, _, entry_port = entry.lower().partition(":")
        if entry_port:
            if not entry_port.isdigit() or int(entry_port) != port:
                continue
        elif port not in (80, 443):
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]):
                return True
        elif host == name:
            return True
    return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class AllowListProxy:
    """One proxy per thread, on a unix socket the sandboxed forwarder connects to."""

    def __init__(self, socket_path: Path, allow: list[str], *, owner_uid: int | None = None) -> None:
        self.socket_path = socket_path
        self.allow = allow
        self.owner_uid = owner_uid
        self._server: asyncio.AbstractServer | None = None
        self.refused: list[str] = []

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        if self.owner_uid is not None:
            os.chown(self.socket_path, self.owner_uid, self.owner_uid)
        os.chmod(self.socket_path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _refuse(self, writer: asyncio.StreamWriter, target: str) -> None:
        self.refused.append(target)
        body = f"relaygate sandbox: {target} is not on the proxy allow-list\n".encode()
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        request_line, _, rest = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3:
            writer.close()
            return
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            port = int(port_text) if port_text.isdigit() else 443
            host = host.strip("[]")
            if not host_allowed(host, port, self.allow):
                await self._refuse(writer, target)
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 15)
            except (OSError, TimeoutError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                await self._refuse(writer, target)
                return
            port = url.port or 80
            if not host_allowed(url.hostname, port, self.allow):
                await self._refuse(writer, f"{url.hostname}:{port}")
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), 15)
            except (OSError, TimeoutError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            # One request per connection keeps the allow-list check honest.
            headers = [
                line for line in rest.split(b"\r\n")
                if line and not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))
            ]
            up_writer.write(f"{method} {path} {version}\r\n".encode("latin-1")
                            + b"\r\n".join([*headers, b"Connection: close"]) + b"\r\n\r\n")
            await up_writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
