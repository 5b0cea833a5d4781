"""Azure OpenAI wire format: OpenAI bodies under /openai/deployments/{deployment}/...,
authenticated by the `api-key` header (or an Entra bearer token), `api-version` required."""

from __future__ import annotations

from aiohttp import web

from relaygate.mock_upstream.exchange import read_json, reject
from relaygate.mock_upstream.openai_format import azure_error, bearer_key, serve_chat, serve_embeddings


def _key(request: web.Request) -> str | None:
    return request.headers.get("api-key") or bearer_key(request)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /openai/deployments/{deployment}/chat/completions?api-version=..."""
    deployment = request.match_info["deployment"]
    problem = _problem(request)
    if problem is not None:
        return reject(request, "azure.chat", deployment, azure_error, *problem)
    body = await read_json(request)
    if body is None:
        return reject(request, "azure.chat", deployment, azure_error, 400, "The request body is not valid JSON.")
    return await serve_chat(request, "azure.chat", deployment, _key(request) or "", body, azure_error)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """POST /openai/deployments/{deployment}/embeddings?api-version=..."""
    deployment = request.match_info["deployment"]
    problem = _problem(request)
    if problem is not None:
        return reject(request, "azure.embeddings", deployment, azure_error, *problem)
    body = await read_json(request)
    if body is None:
        return reject(request, "azure.embeddings", deployment, azure_error, 400, "The request body is not valid JSON.")
    return await serve_embeddings(request, "azure.embeddings", deployment, body, azure_error)


def _problem(request: web.Request) -> tuple[int, str] | None:
    if not _key(request):
        return 401, ("Access denied due to missing subscription key. Make sure to include "
                     "subscription key when making requests to an API.")
    if not request.query.get("api-version"):
        return 404, "Resource not found"
    return None
