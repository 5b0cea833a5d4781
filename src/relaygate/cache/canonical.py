"""The canonical form of a request: every field that can change the answer, in sorted
JSON, with what never does (timestamps, request ids and timings inside tool results,
tool-call ids, cache breakpoints, the stream flag) left out. Its hash is the exact-cache
key; its parts (system + history) also guard the semantic cache."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from relaygate.agent.canonical import canonicalize_tool_result as canonical_text
from relaygate.agent.canonical import strip_volatile
from relaygate.config.models import RouteConfig
from relaygate.formats.types import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from relaygate.pipeline.context import Principal
from relaygate.routing.plan import Group, Leaf

KEY_VERSION = 1

# Request parameters that never change the answer (attribution, storage, transport).
_NEUTRAL_EXTRA = frozenset({"metadata", "store", "user", "stream_options", "service_tier_hint"})


def canonicalize_tool_result(text: str) -> str:
    """A tool result's text in canonical form: JSON objects and arrays without their
    volatile fields (`VOLATILE_KEYS`), keys sorted; any other text unchanged."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return text
    return canonical_text(stripped)


class _CallIds:
    """Tool-call ids are random per answer; they are numbered by first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, raw: str) -> str:
        return self.ids.setdefault(raw, f"call-{len(self.ids)}")


def _image(p: ImagePart) -> dict[str, Any]:
    data = hashlib.blake2b(p.data.encode(), digest_size=16).hexdigest() if p.data else None
    return {"t": "image", "url": p.url, "data": data, "media_type": p.media_type, "detail": p.detail}


def _arguments(raw: str) -> Any:
    try:
        return strip_volatile(orjson.loads(raw)) if raw else {}
    except orjson.JSONDecodeError:
        return raw


def _part(p: Part, ids: _CallIds) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"t": "text", "text": p.text}
    if isinstance(p, ImagePart):
        return _image(p)
    if isinstance(p, ToolCallPart):
        return {"t": "call", "id": ids(p.id), "name": p.name, "args": _arguments(p.arguments)}
    if isinstance(p, ToolResultPart):
        content = [
            {"t": "text", "text": canonicalize_tool_result(c.text)} if isinstance(c, TextPart) else _image(c)
            for c in p.content
        ]
        return {"t": "result", "id": ids(p.tool_call_id), "error": p.is_error, "content": content}
    assert isinstance(p, ReasoningPart)
    return {"t": "reasoning", "text": p.text}


def canonical_messages(messages: list[Message], ids: _CallIds | None = None) -> list[dict[str, Any]]:
    ids = ids or _CallIds()
    return [{"role": m.role, "content": [_part(p, ids) for p in m.content]} for m in messages]


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


def canonical_request(chat: ChatRequest) -> dict[str, Any]:
    """Every request field that can change the answer (the route is added by `cache_key`)."""
    ids = _CallIds()
    return {
        "system": [p.text for p in chat.system],
        "messages": canonical_messages(chat.messages, ids),
        "max_tokens": chat.max_tokens,
        "temperature": _num(chat.temperature),
        "top_p": _num(chat.top_p),
        "top_k": chat.top_k,
        "stop": chat.stop,
        "tools": [{"name": t.name, "description": t.description, "parameters": t.parameters}
                  for t in chat.tools] if chat.tools else None,
        "tool_choice": chat.tool_choice,
        "parallel_tool_calls": chat.parallel_tool_calls,
        "response_format": chat.response_format,
        "extra": {k: v for k, v in chat.extra.items() if k not in _NEUTRAL_EXTRA},
    }


_ROUTE_IDS: dict[int, tuple[RouteConfig, dict[str, Any]]] = {}
_ROUTE_IDS_MAX = 4096


def route_identity(route_name: str, route: RouteConfig | None) -> dict[str, Any]:
    """The route as it resolves now: its name and its targets (a changed target list
    changes every key, so answers of a replaced model are never served). Config objects are
    never mutated (a reload builds new ones), so each one's dump is computed once."""
    if route is None:
        return {"name": route_name}
    known = _ROUTE_IDS.get(id(route))
    if known is not None and known[0] is route:
        dumped = known[1]
    else:
        if len(_ROUTE_IDS) >= _ROUTE_IDS_MAX:
            _ROUTE_IDS.clear()
        dumped = route.model_dump(mode="json", include={"strategy", "targets"})
        _ROUTE_IDS[id(route)] = (route, dumped)
    return {"name": route_name, "route": dumped}


def digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=20).hexdigest()


def cache_key(chat: ChatRequest, route_name: str, route: RouteConfig | None, tenant: str) -> str:
    """The exact-cache key: a hash of tenant, route and canonical request."""
    return digest({"v": KEY_VERSION, "tenant": tenant, "route": route_identity(route_name, route),
                   "request": canonical_request(chat)})


def context_digest(chat: ChatRequest, route_name: str, route: RouteConfig | None, tenant: str) -> str:
    """What must match exactly for a semantic hit: everything in the canonical request but
    the last user message's text (system prompt, history, tools, parameters, route, tenant)."""
    req = canonical_request(chat)
    messages = req["messages"]
    if messages and messages[-1]["role"] == "user":
        last = messages[-1]
        last["content"] = [c for c in last["content"] if c["t"] != "text"]
    return digest({"v": KEY_VERSION, "semantic": True, "tenant": tenant,
                   "route": route_identity(route_name, route), "request": req})


def last_user_text(chat: ChatRequest) -> str | None:
    """The text of the last message when it is a user's question (else None: tool results
    and assistant turns are never matched by meaning)."""
    if not chat.messages or chat.messages[-1].role != "user":
        return None
    parts = chat.messages[-1].content
    if any(not isinstance(p, TextPart) for p in parts):
        return None
    text = "\n".join(p.text for p in parts if isinstance(p, TextPart)).strip()
    return text or None


def tenant_of(principal: Principal | None, scope: str) -> str:
    """The cache tenant: the key's org (default) or the key itself (`scope: key`, and for
    keys that belong to no org, so nothing is shared by accident)."""
    if principal is None:
        return "anonymous"
    if scope == "org" and principal.org:
        return f"org:{principal.org}"
    return f"key:{principal.key_id}"


def _leaves(node: Group | Leaf) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


def deterministic(chat: ChatRequest, plan: Group | None) -> bool:
    """Temperature 0 on every target. An unset temperature is not deterministic (OpenAI and
    Anthropic both default to 1)."""
    if chat.temperature is None or float(chat.temperature) != 0.0:
        return False
    if plan is None:
        return True
    for leaf in _leaves(plan):
        t = leaf.override_params.get("temperature")
        if t is not None and float(t) != 0.0:
            return False
    return True
