"""A tiny OpenAI-shaped upstream that waits: `/v1/chat/completions`
answers the fixed completion after --delay-ms; `/sse/v1/chat/completions` (or a request
with "stream": true) sends its first chunk after --delay-ms and then one chunk every
--chunk-ms (a slow token stream, to hold many streams open: what nginx cannot do). For a
slow non-streaming answer compare.py prefers nginx's `echo_sleep` (harness.start_slow_nginx),
which is no limit itself; this one is, on a slow machine.

    python bench/slow_upstream.py --port 8091 --delay-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import COMPLETION, sse_body  # noqa: E402

BODY = json.dumps(COMPLETION, separators=(",", ":")).encode()


def build(delay_s: float, chunk_s: float, chunks: int) -> web.Application:
    events = [e + b"\n\n" for e in sse_body(chunks).split(b"\n\n") if e]

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        stream = request.path.startswith("/sse/") or b'"stream":true' in raw.replace(b" ", b"")
        await asyncio.sleep(delay_s)
        if not stream:
            return web.Response(body=BODY, content_type="application/json")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        for i, event in enumerate(events):
            if i and chunk_s:
                await asyncio.sleep(chunk_s)
            await resp.write(event)
        await resp.write_eof()
        return resp

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/sse/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=int, default=500)
    ap.add_argument("--chunk-ms", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=20)
    args = ap.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(build(args.delay_ms / 1000, args.chunk_ms / 1000, args.chunks), host=args.host,
                port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
