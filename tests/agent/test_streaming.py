"""StreamingFallback with the real openai SDK against a scripted server on a real socket."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from relaygate.agent import StreamingFallback, is_streaming_overload

from .agent_testkit import ScriptedOpenAI, ScriptedReply


async def _streamed(client: AsyncOpenAI) -> str:
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    parts = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


async def _whole(client: AsyncOpenAI) -> str:
    response = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return response.choices[0].message.content or ""


@pytest.mark.parametrize("failure", [ScriptedReply(status=529, error_type="overloaded_error"), ScriptedReply(break_stream=True)])
async def test_switches_to_non_streaming_after_an_overload_and_tells_the_user_once(failure: ScriptedReply) -> None:
    def reply(body: dict[str, Any]) -> ScriptedReply:
        return failure if body.get("stream") else ScriptedReply(content="whole answer")

    told: list[str] = []
    async with ScriptedOpenAI(reply) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        fallback = StreamingFallback(told.append)
        first = await fallback.run(lambda: _streamed(client), lambda: _whole(client))
        second = await fallback.run(lambda: _streamed(client), lambda: _whole(client))
        await client.close()
    assert first == second == "whole answer"
    assert len(told) == 1 and "overloaded" in told[0]
    assert [bool(r.get("stream")) for r in server.requests] == [True, False, False]
    assert not fallback.streaming


async def test_streams_while_streaming_works() -> None:
    async with ScriptedOpenAI(lambda body: ScriptedReply(content="streamed")) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        fallback = StreamingFallback()
        assert await fallback.run(lambda: _streamed(client), lambda: _whole(client)) == "streamed"
        await client.close()
    assert fallback.streaming


async def test_other_errors_propagate_and_keep_streaming() -> None:
    async with ScriptedOpenAI(lambda body: ScriptedReply(status=400, error_type="invalid_request_error")) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        fallback = StreamingFallback()
        with pytest.raises(openai.BadRequestError):
            await fallback.run(lambda: _streamed(client), lambda: _whole(client))
        await client.close()
    assert fallback.streaming


def test_overload_classification() -> None:
    assert is_streaming_overload(type("E", (Exception,), {"status_code": 529})())
    assert is_streaming_overload(RuntimeError("overloaded_error: Overloaded"))
    assert not is_streaming_overload(type("E", (Exception,), {"status_code": 401})("unauthorized"))
    assert not is_streaming_overload(ValueError("bad"))
