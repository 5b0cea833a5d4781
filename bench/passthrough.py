"""The plain-Python reference of shared/PEERS.md: an aiohttp server that forwards each
request's body bytes to one upstream over one shared aiohttp ClientSession and returns
the upstream's status and body bytes unchanged (streams chunk by chunk). No parsing, no
auth, no accounting: what any Python gateway costs at the least.

    python bench/passthrough.py --port 8100 --upstream http://127.0.0.1:8090
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
# hop-by-hop and framing headers the server sets itself
_DROP = {"content-length", "transfer-encoding", "connection", "keep-alive", "host", "content-encoding"}


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
    async with session.post(request.app[UPSTREAM] + request.rel_url.raw_path_qs, data=body,
                            headers=headers) as up:
        out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _DROP}
        if up.headers.get("content-type", "").startswith("text/event-stream"):
            resp = web.StreamResponse(status=up.status, headers=out_headers)
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        return web.Response(status=up.status, body=await up.read(), headers=out_headers)


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                         skip_auto_headers=("User-Agent",))
    yield
    await app[SESSION].close()


def build(upstream: str) -> web.Application:
    app = web.Application(client_max_size=20 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_get("/health", health)
    app.router.add_post("/{tail:.*}", forward)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:8090")
    args = ap.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(build(args.upstream), host=args.host, port=args.port, access_log=None, print=None,
                backlog=4096)


if __name__ == "__main__":
    main()
