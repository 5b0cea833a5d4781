"""Google Gemini wire format (AI Studio and Vertex paths): generateContent, its SSE and
JSON-array streams, embedContent / batchEmbedContents, countTokens, Google's error shape.

Beside generate.py's conventions, `TRIGGER_SAFETY` in the last user text makes the answer
blocked with finishReason SAFETY (no content), as Gemini reports a safety block.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from relaygate.mock_upstream import anthropic_format
from relaygate.mock_upstream.embeddings import DEFAULT_DIMENSIONS, embedding_vector
from relaygate.mock_upstream.exchange import (
    ErrorResponder,
    apply_fault,
    json_response,
    mock_reply,
    read_json,
    reject,
    send_body,
    send_stream,
    state_of,
)
from relaygate.mock_upstream.generate import MockReply, count_tokens, split_chunks
from relaygate.mock_upstream.prompt_cache import CacheBlock

# Gemini 2.5 caches prompt prefixes implicitly, from about 1024 tokens on.
_IMPLICIT_CACHE_MIN_TOKENS = 1024
_THOUGHTS_TOKENS = 16
_THINKING_MARKERS = ("2.5", "thinking", "gemini-3")
_SAFETY_TRIGGER = "TRIGGER_SAFETY"

_STREAM_ERROR = orjson.dumps({"error": {"code": 500, "message": "An internal error has occurred.",
                                         "status": "INTERNAL"}})

_FINISH = {"end_turn": "STOP", "max_tokens": "MAX_TOKENS", "tool_use": "STOP"}
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def gemini_error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    """Google's error envelope: {"error": {"code", "message", "status"}}."""
    body = {"error": {"code": status, "message": message, "status": _STATUSES.get(status, "UNKNOWN")}}
    return json_response(body, status, headers)


async def ai_studio(request: web.Request) -> web.StreamResponse:
    """POST /v1beta/models/{model}:{action} (key in x-goog-api-key or ?key=)."""
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    model, action = _split_target(request.match_info["target"])
    if not key:
        return reject(request, f"gemini.{action}", model, gemini_error, 403,
                      "Method doesn't allow unregistered callers. Please use an API key.")
    return await _dispatch(request, model, action, key)


async def vertex(request: web.Request) -> web.StreamResponse:
    """POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{action} (OAuth bearer)."""
    auth = request.headers.get("Authorization", "")
    model, action = _split_target(request.match_info["target"])
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return reject(request, f"gemini.{action}", model, gemini_error, 401,
                      "Request is missing required authentication credential.")
    return await _dispatch(request, model, action, auth[7:].strip())


def _split_target(target: str) -> tuple[str, str]:
    model, _, action = target.partition(":")
    return model, action


async def _dispatch(request: web.Request, model: str, action: str, key: str) -> web.StreamResponse:
    if action == "generateContent":
        return await _generate(request, model, key, stream=False)
    if action == "streamGenerateContent":
        return await _generate(request, model, key, stream=True)
    if action in ("embedContent", "batchEmbedContents"):
        return await _embed(request, model, batch=action == "batchEmbedContents")
    if action == "countTokens":
        body = await read_json(request) or {}
        return json_response({"totalTokens": sum(b.tokens for b in _cache_blocks(body))})
    return reject(request, f"gemini.{action or 'unknown'}", model, gemini_error, 404,
                  f"Method {action!r} not found for models/{model}.")


async def _generate(request: web.Request, model: str, key: str, stream: bool) -> web.StreamResponse:
    kind = "gemini.stream" if stream else "gemini.generate"
    body = await read_json(request)
    contents = body.get("contents") if body else None
    if body is None or not isinstance(contents, list) or not contents:
        return reject(request, kind, model, gemini_error, 400, "* GenerateContentRequest.contents: contents is not specified")
    state = state_of(request)
    fault = state.decide(model, stream)
    early = await apply_fault(request, kind, model, fault, gemini_error)
    if early is not None:
        return early
    blocks = _cache_blocks(body)
    prompt_tokens = sum(b.tokens for b in blocks)
    cached = 0
    if prompt_tokens >= _IMPLICIT_CACHE_MIN_TOKENS:
        read = state.prompt_cache.account(f"gemini|{key}|{model}", blocks).read
        cached = read if read >= _IMPLICIT_CACHE_MIN_TOKENS else 0
    config = body.get("generationConfig") or {}
    max_tokens = config.get("maxOutputTokens") if isinstance(config, dict) else None
    text = _last_user_text(contents)
    reply = mock_reply(state, fault, text, prompt_tokens * 4, _offers_functions(body),
                       int(max_tokens) if max_tokens else None)
    thoughts = _THOUGHTS_TOKENS if any(m in model for m in _THINKING_MARKERS) else 0
    blocked = _SAFETY_TRIGGER in text and fault.reply_text is None
    usage = _usage(prompt_tokens, 0 if blocked else reply.output_tokens, cached, thoughts)
    response_id = f"mock{state.next_seq()}"
    if not stream:
        candidate = _blocked_candidate() if blocked else {
            "content": {"role": "model", "parts": _parts(reply)},
            "finishReason": _FINISH.get(reply.stop_reason, "STOP"),
            "index": 0,
        }
        payload = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                   "responseId": response_id}
        return await send_body(request, kind, model, fault, orjson.dumps(payload))

    pieces: list[dict[str, Any]] = []
    if blocked:
        pieces.append({"candidates": [_blocked_candidate()]})
    else:
        texts = split_chunks(reply.text)
        for text_piece in texts:
            pieces.append({"candidates": [{"content": {"role": "model", "parts": [{"text": text_piece}]},
                                           "index": 0}]})
        for call in reply.tool_calls:
            part = {"functionCall": {"name": call.name, "args": anthropic_format.tool_input(call.arguments)}}
            pieces.append({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}]})
        if not pieces:
            pieces.append({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "index": 0}]})
        pieces[-1]["candidates"][0]["finishReason"] = _FINISH.get(reply.stop_reason, "STOP")
    for piece in pieces:
        piece["modelVersion"] = model
        piece["responseId"] = response_id
    pieces[-1]["usageMetadata"] = usage
    if request.query.get("alt") == "sse":
        chunks = [b"data: " + orjson.dumps(p) + b"\r\n\r\n" for p in pieces]
        error = b"data: " + _STREAM_ERROR + b"\r\n\r\n"
        return await send_stream(request, kind, model, fault, chunks, "text/event-stream", error_chunk=error)
    # Without alt=sse the stream is one JSON array, sent element by element.
    chunks = [(b"[" if i == 0 else b"\n,\r\n") + orjson.dumps(p) for i, p in enumerate(pieces)]
    chunks.append(b"\n]")
    error = b"\n,\r\n" + _STREAM_ERROR + b"\n]"
    return await send_stream(request, kind, model, fault, chunks, "application/json", error_chunk=error)


def _blocked_candidate() -> dict[str, Any]:
    return {
        "finishReason": "SAFETY",
        "index": 0,
        "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ],
    }


def _parts(reply: MockReply) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if reply.text or not reply.tool_calls:
        parts.append({"text": reply.text})
    for call in reply.tool_calls:
        parts.append({"functionCall": {"name": call.name, "args": anthropic_format.tool_input(call.arguments)}})
    return parts


def _usage(prompt: int, candidates: int, cached: int, thoughts: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _offers_functions(body: dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and t.get("functionDeclarations") for t in body.get("tools") or [])


def _cache_blocks(body: dict[str, Any]) -> list[CacheBlock]:
    """One block per tool list, system instruction and content turn (implicit caching)."""
    pieces: list[bytes] = []
    if body.get("tools"):
        pieces.append(b"tools:" + orjson.dumps(body["tools"]))
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        pieces.append(b"system:" + orjson.dumps(system))
    pieces.extend(orjson.dumps(c) for c in body.get("contents") or [])
    return [CacheBlock(p, max(1, math.ceil(len(p) / 4)), True) for p in pieces]


def _last_user_text(contents: list[Any]) -> str:
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return "\n".join(
                str(p["text"]) for p in content.get("parts") or [] if isinstance(p, dict) and "text" in p
            )
    return ""


async def _embed(request: web.Request, model: str, batch: bool) -> web.StreamResponse:
    kind = "gemini.embed"
    errors: ErrorResponder = gemini_error
    body = await read_json(request)
    requests = (body.get("requests") if batch else [body]) if body else None
    if not isinstance(requests, list) or not requests or not all(isinstance(r, dict) for r in requests):
        return reject(request, kind, model, errors, 400, "* EmbedContentRequest.content: content is not specified")
    texts: list[tuple[str, int]] = []
    for item in requests:
        content = item.get("content")
        if not isinstance(content, dict):
            return reject(request, kind, model, errors, 400, "* EmbedContentRequest.content: content is not specified")
        text = "\n".join(str(p.get("text", "")) for p in content.get("parts") or [] if isinstance(p, dict))
        dims = item.get("outputDimensionality") or DEFAULT_DIMENSIONS
        if not isinstance(dims, int) or not 1 <= dims <= 4096:
            return reject(request, kind, model, errors, 400, "outputDimensionality must be in [1, 4096]")
        texts.append((text, dims))
    fault = state_of(request).decide(model, False)
    early = await apply_fault(request, kind, model, fault, errors)
    if early is not None:
        return early
    vectors = [{"values": embedding_vector(text, dims)} for text, dims in texts]
    payload: dict[str, Any] = {"embeddings": vectors} if batch else {"embedding": vectors[0]}
    if not batch:
        payload["usageMetadata"] = {"promptTokenCount": max(1, count_tokens(texts[0][0]))}
    return await send_body(request, kind, model, fault, orjson.dumps(payload))


def models_list() -> dict[str, Any]:
    names = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "text-embedding-004")
    return {"models": [{"name": f"models/{n}", "displayName": n,
                        "supportedGenerationMethods": ["generateContent", "countTokens"]} for n in names]}


