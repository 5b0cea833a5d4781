"""The stage interface and the pipeline that runs stages in order."""

from __future__ import annotations

from typing import Protocol

from relaygate.errors import GatewayError
from relaygate.pipeline.context import RequestContext


class Stage(Protocol):
    """One job in a request's life. `on_request` runs in order before the answer is
    known (raise a `GatewayError` to refuse); `on_complete` runs in reverse order once the
    answer is known (for streams, at their end), also after a failure, for every stage
    whose `on_request` ran."""

    name: str

    async def on_request(self, ctx: RequestContext) -> None: ...

    async def on_complete(self, ctx: RequestContext) -> None: ...


class Terminal(Protocol):
    async def run(self, ctx: RequestContext) -> None: ...


class Pipeline:
    def __init__(self, stages: list[Stage], terminal: Terminal) -> None:
        self.stages = stages
        self.terminal = terminal

    async def run(self, ctx: RequestContext) -> None:
        """Runs every stage's `on_request`, then the provider call unless a stage already
        answered (a cache hit). On failure the stages that ran are completed."""
        ran: list[Stage] = []
        ctx.state["_ran"] = ran
        try:
            for stage in self.stages:
                await stage.on_request(ctx)
                ran.append(stage)
            if ctx.response is None and ctx.stream is None:
                await self.terminal.run(ctx)
        except BaseException as exc:
            if isinstance(exc, GatewayError):  # refusals reach on_complete with their status
                ctx.status, ctx.error = exc.status, exc.message
            elif ctx.status == 200:
                ctx.status = 500
            await self.complete(ctx)
            raise

    async def refuse(self, ctx: RequestContext, err: GatewayError) -> None:
        """Completes, for a request refused before `run` (its body unreadable), the stages
        that observe every request (`observes_refusals = True`: metrics, logs, ledger)."""
        ctx.status, ctx.error = err.status, err.message
        for stage in reversed(self.stages):
            if getattr(stage, "observes_refusals", False):
                await stage.on_complete(ctx)

    async def complete(self, ctx: RequestContext) -> None:
        ran: list[Stage] = ctx.state.pop("_ran", [])
        for stage in reversed(ran):
            await stage.on_complete(ctx)
