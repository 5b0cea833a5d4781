"""The terminal stage: route the request through its strategy tree and call providers.

Non-streaming answers are read whole. A stream is committed to a target only once its
first events arrived: a failure before that falls over to the next target like any
other error; after it, the stream ends with an error event (the server's job)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from relaygate.errors import GatewayError, UpstreamError
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats import openai as openai_fmt
from relaygate.formats.types import StreamEvent
from relaygate.pipeline.context import RequestContext, StreamBody
from relaygate.pipeline.route import routing_facts
from relaygate.providers.base import ChatCall, StreamDecoder
from relaygate.providers.http import Deadlines
from relaygate.providers.registry import ProviderRegistry
from relaygate.routing.engine import AllTargetsFailed, Router
from relaygate.routing.plan import Leaf, first_leaf


class CallStage:
    def __init__(self, registry: ProviderRegistry, router: Router, deadlines: Deadlines) -> None:
        self.registry = registry
        self.router = router
        self.deadlines = deadlines

    async def run(self, ctx: RequestContext) -> None:
        assert ctx.plan is not None
        stream = ctx.chat.stream

        async def attempt(leaf: Leaf) -> None:
            adapter, transport = await self.registry.get(leaf.provider, leaf.credential)
            native = (
                ctx.body if adapter.native_format == ctx.format and not ctx.state.get("chat_modified") else None
            )
            up = adapter.chat_request(ChatCall(ctx.chat, leaf.model, leaf.override_params, native))
            resp = await transport.send(up, self.deadlines)
            if resp.status >= 400:
                raise adapter.error(resp.status, resp.headers, resp.body)
            if not stream:
                ctx.response = adapter.parse_chat(resp.body)
                ctx.raw_response = resp.body if native is not None else None
                return
            assert resp.chunks is not None
            # the request went up unchanged in the client's format: so does the stream come back
            passthrough = _passthrough(ctx) if native is not None else None
            decoder = passthrough if passthrough is not None else adapter.stream_decoder()
            chunks = resp.chunks.__aiter__()
            first: list[StreamEvent] = []
            try:
                while not first:
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        first = decoder.close()
                        break
                    first = decoder.feed(chunk)
            except BaseException:
                resp.release()
                raise
            ctx.stream = StreamBody(first, _rest(chunks, decoder), resp.release,
                                    passthrough.take if passthrough is not None else None)

        try:
            routed = await self.router.run(ctx.plan, attempt, routing_facts(ctx), ctx.attempts)
        except AllTargetsFailed as exc:
            raise self.failure(ctx, exc.last) from None
        ctx.served = routed.leaf
        ctx.degraded = routed.leaf != first_leaf(ctx.plan)

    def failure(self, ctx: RequestContext, last: UpstreamError) -> GatewayError:
        """Every target failed (503 listing the attempts), or the one error that stops a
        route (an upstream 400 is the client's to fix, and is passed on)."""
        attempts = [
            {"provider": a.provider, "model": a.model, "status": a.status, "message": a.message}
            for a in ctx.attempts
        ]
        tried = {(a.provider, a.model) for a in ctx.attempts}
        if len(tried) <= 1 and last.status in (400, 404, 413, 422) and last.error_type != "breaker_open":
            return GatewayError(last.status, last.message, "invalid_request_error", "upstream_rejected",
                                extra={"attempts": attempts})
        listing = "; ".join(f"{a['provider']}/{a['model']} -> {a['status']} {a['message']}" for a in attempts)
        return GatewayError(
            503,
            f"all {len(attempts)} attempts failed: {listing}",
            "upstream_error",
            "all_targets_failed",
            retry_after=last.retry_after,
            extra={"attempts": attempts},
        )


def _passthrough(ctx: RequestContext) -> openai_fmt.StreamPassthrough | anthropic_fmt.StreamPassthrough | None:
    """The decoder that also keeps the upstream's bytes for a client of the same format."""
    if ctx.format == "openai":
        return openai_fmt.StreamPassthrough(ctx.chat.include_usage)
    if ctx.format == "anthropic":
        return anthropic_fmt.StreamPassthrough()
    return None


async def _rest(chunks: AsyncIterator[bytes], decoder: StreamDecoder) -> AsyncIterator[list[StreamEvent]]:
    async for chunk in chunks:
        events = decoder.feed(chunk)
        if events:
            yield events
    tail = decoder.close()
    if tail:
        yield tail
