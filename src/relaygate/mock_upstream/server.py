"""The mock-upstream aiohttp application: every provider's endpoints on one port.

Endpoints
- OpenAI: POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models (Bearer key).
- Anthropic: POST /v1/messages, POST /v1/messages/count_tokens (x-api-key or Bearer, and
  anthropic-version); GET /v1/models answers in Anthropic's shape when anthropic-version is sent.
- Bedrock: POST /model/{modelId}/converse | converse-stream | invoke | invoke-with-response-stream
  (SigV4 `Authorization: AWS4-HMAC-SHA256 ...` or a Bedrock API key as Bearer).
- Gemini: POST /v1beta/models/{model}:generateContent | streamGenerateContent[?alt=sse] |
  embedContent | batchEmbedContents | countTokens (x-goog-api-key or ?key=); Vertex paths
  /v1[beta1]/projects/{p}/locations/{l}/publishers/google/models/{model}:... (Bearer).
- Azure OpenAI: POST /openai/deployments/{deployment}/chat/completions | embeddings
  (?api-version=..., api-key header).
- Control: GET /_mock/stats, POST /_mock/reset.

Model names choose a fault (see faults.py): fail-<code>, hang, slow-<ms>, cut-<k>,
stall-<k>, error-<k>, reply-<text>; anything else answers via generate.py.

In-process use (tests):

    async with serving(FaultConfig(seed=1)) as url: ...          # on the running loop
    with MockUpstreamThread(FaultConfig()) as upstream:           # own thread and loop
        OpenAI(base_url=upstream.url + "/v1", api_key="k")
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from relaygate.mock_upstream import (
    anthropic_format,
    azure_format,
    bedrock_format,
    gemini_format,
    openai_format,
)
from relaygate.mock_upstream.exchange import STATE_KEY, MockState, json_response, state_of
from relaygate.mock_upstream.faults import FaultConfig


def build_app(faults: FaultConfig | None = None) -> web.Application:
    """The mock-upstream application with the given fault settings (none by default)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = MockState(faults or FaultConfig())
    app.router.add_post("/v1/chat/completions", openai_format.chat_completions)
    app.router.add_post("/v1/embeddings", openai_format.embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/messages", anthropic_format.messages)
    app.router.add_post("/v1/messages/count_tokens", anthropic_format.count_tokens_endpoint)
    app.router.add_post("/model/{model_id:.+}/converse", bedrock_format.converse)
    app.router.add_post("/model/{model_id:.+}/converse-stream", bedrock_format.converse_stream)
    app.router.add_post("/model/{model_id:.+}/invoke", bedrock_format.invoke)
    app.router.add_post("/model/{model_id:.+}/invoke-with-response-stream", bedrock_format.invoke_stream)
    app.router.add_post("/v1beta/models/{target}", gemini_format.ai_studio)
    app.router.add_get("/v1beta/models", _gemini_models)
    for version in ("v1", "v1beta1"):
        app.router.add_post(
            f"/{version}/projects/{{project}}/locations/{{location}}/publishers/google/models/{{target}}",
            gemini_format.vertex,
        )
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", azure_format.chat_completions)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", azure_format.embeddings)
    app.router.add_get("/_mock/stats", _stats)
    app.router.add_post("/_mock/reset", _reset)
    return app


async def _models(request: web.Request) -> web.StreamResponse:
    """GET /v1/models in the caller's format (Anthropic when it sends `anthropic-version`)."""
    state_of(request).stats.record("models", "", "ok")
    if request.headers.get("anthropic-version"):
        return json_response(anthropic_format.models_list())
    return json_response(openai_format.models_list())


async def _gemini_models(request: web.Request) -> web.StreamResponse:
    state_of(request).stats.record("models", "", "ok")
    return json_response(gemini_format.models_list())


async def _stats(request: web.Request) -> web.StreamResponse:
    return json_response(state_of(request).stats.as_json())


async def _reset(request: web.Request) -> web.StreamResponse:
    state_of(request).reset()
    return json_response({"ok": True})


@contextlib.asynccontextmanager
async def serving(
    faults: FaultConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serves the mock upstream on the running loop; yields its base URL (port 0 = any free)."""
    runner = web.AppRunner(build_app(faults), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


async def serve_forever(
    faults: FaultConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8090,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    async with serving(faults, host, port) as url:
        if on_ready is not None:
            on_ready(url)
        await asyncio.Event().wait()


def run_mock_upstream(
    host: str = "127.0.0.1",
    port: int = 8090,
    on_ready: Callable[[str], None] | None = None,
    **faults: Any,
) -> None:
    """Runs the mock upstream (on uvloop) until interrupted; `faults` are FaultConfig fields.

    `on_ready` receives the base URL once the socket is bound (port 0 picks a free one).
    """
    config = FaultConfig(**faults)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            asyncio.run(serve_forever(config, host, port, on_ready))
        else:
            uvloop.run(serve_forever(config, host, port, on_ready))


class MockUpstreamThread:
    """The mock upstream on a real socket in a background thread, for synchronous clients."""

    def __init__(self, faults: FaultConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = faults
        self.host = host
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mock-upstream", daemon=True)

    def start(self) -> MockUpstreamThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError("mock upstream failed to start") from self._error
        if not self.url:
            raise RuntimeError("mock upstream did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> MockUpstreamThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serving(self.faults, self.host, self.port) as url:
                self.url = url
                self.port = int(url.rsplit(":", 1)[1])
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
