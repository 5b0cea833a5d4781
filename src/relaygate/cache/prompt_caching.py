"""Anthropic prompt caching: up to 4 `cache_control` breakpoints on the request, in
priority order (tools, system prompt, large user content, the most recent tool results),
on canonical content so that the cached prefix is byte-stable from turn to turn.

Placed on `ctx.chat` when the route has `prompt_caching: true` and any of its targets is
Anthropic-family (Anthropic direct, or a Claude model on Bedrock); the Anthropic codec
writes them as `cache_control` and the Bedrock Converse codec as `cachePoint`. Other
providers' codecs ignore them, so a mixed route (Anthropic first, OpenAI as fallback) is fine.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaygate.cache.canonical import canonicalize_tool_result
from relaygate.config.models import GatewayConfig, RouteConfig
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats.types import ChatRequest, TextPart, ToolResultPart
from relaygate.pipeline.context import RequestContext
from relaygate.routing.plan import Group, Leaf

MAX_BREAKPOINTS = 4
CHARS_PER_TOKEN = 4  # the usual estimate for English text and JSON


def _leaves(node: Group | Leaf) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


def has_breakpoints(chat: ChatRequest) -> bool:
    if any(t.cache_control for t in chat.tools or []) or any(p.cache_control for p in chat.system):
        return True
    return any(getattr(p, "cache_control", None) for m in chat.messages for p in m.content)


def canonicalize_for_caching(chat: ChatRequest) -> None:
    """Tool results without volatile fields and with sorted keys; tool schemas with sorted keys."""
    for m in chat.messages:
        for p in m.content:
            if isinstance(p, ToolResultPart):
                for c in p.content:
                    if isinstance(c, TextPart):
                        c.text = canonicalize_tool_result(c.text)
    for t in chat.tools or []:
        t.parameters = orjson.loads(orjson.dumps(t.parameters, option=orjson.OPT_SORT_KEYS))


def plan_breakpoints(chat: ChatRequest, large_content_tokens: int, ttl: str = "5m") -> int:
    """Marks up to 4 breakpoints in priority order; returns how many it placed. A request
    that already carries breakpoints is the client's plan and is left alone."""
    if has_breakpoints(chat):
        return 0
    marker: dict[str, Any] = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": ttl}
    slots: list[Any] = []
    if chat.tools:
        slots.append(chat.tools[-1])
    system = [p for p in chat.system if p.text]
    if system:
        slots.append(system[-1])
    large = [p for m in chat.messages if m.role == "user" for p in m.content
             if isinstance(p, TextPart) and len(p.text) >= large_content_tokens * CHARS_PER_TOKEN]
    if large:
        slots.append(large[-1])
    results = [p for m in chat.messages for p in m.content if isinstance(p, ToolResultPart)]
    for p in reversed(results):
        if len(slots) >= MAX_BREAKPOINTS:
            break
        slots.append(p)
    for target in slots[:MAX_BREAKPOINTS]:
        target.cache_control = dict(marker)
    return min(len(slots), MAX_BREAKPOINTS)


class PromptCaching:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg

    def anthropic_family(self, leaf: Leaf) -> bool:
        provider = self.cfg.providers.get(leaf.provider)
        if provider is None:
            return False
        if provider.type == "anthropic":
            return True
        return provider.type == "bedrock" and ("anthropic" in leaf.model or "claude" in leaf.model)

    def wanted(self, route: RouteConfig | None, plan: Group | None) -> bool:
        return bool(route is not None and route.prompt_caching and plan is not None
                    and any(self.anthropic_family(leaf) for leaf in _leaves(plan)))

    def apply(self, ctx: RequestContext) -> None:
        """Places breakpoints on `ctx.chat` when its route asks for them (on a cache miss or
        bypass: a hit never reaches a provider).

        `chat_modified` is not set: the codecs then serialise without provider-specific
        parameters, which would drop e.g. Anthropic's `thinking`. Instead an Anthropic-format
        request's pass-through body is re-rendered from the marked `ctx.chat` with those
        parameters; an OpenAI-format body only reaches OpenAI-format targets, which have no
        breakpoints, and Anthropic/Bedrock targets are always serialised from `ctx.chat`."""
        if not self.wanted(ctx.state.get("route"), ctx.plan):
            return
        pc = self.cfg.cache.prompt_caching
        canonicalize_for_caching(ctx.chat)
        placed = plan_breakpoints(ctx.chat, pc.large_content_tokens, pc.ttl)
        ctx.state["prompt_cache_breakpoints"] = placed
        if ctx.format == "anthropic" and not ctx.state.get("chat_modified"):
            body = anthropic_fmt.dump_request(ctx.chat, str(ctx.body.get("model", ctx.chat.model)), with_extra=True)
            if "max_tokens" in ctx.body:
                body["max_tokens"] = ctx.body["max_tokens"]
            if "temperature" in ctx.body:
                body["temperature"] = ctx.body["temperature"]
            ctx.body = body
