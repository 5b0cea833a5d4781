"""A cached answer streams when the client streams, parsed by the official SDKs."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

from tests.cache.helpers import chat
from tests.conftest import MASTER, gateway_client, make_config


async def test_cached_answer_replays_as_an_openai_stream(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        sdk = openai.AsyncOpenAI(api_key=MASTER, base_url=str(client.make_url("/v1")), max_retries=0)
        body = chat("Tell me about the sea")
        plain = await sdk.chat.completions.with_raw_response.create(**body)
        assert plain.headers["x-relaygate-cache"] == "miss"
        first = plain.parse()
        raw = await sdk.chat.completions.with_raw_response.create(
            **body, stream=True, stream_options={"include_usage": True})
        assert raw.headers["x-relaygate-cache"] == "hit-exact"
        text, usage, finish = [], None, None
        async for chunk in raw.parse():
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        assert "".join(text) == first.choices[0].message.content
        assert finish == first.choices[0].finish_reason
        assert usage is not None and usage.prompt_tokens == first.usage.prompt_tokens
        assert usage.completion_tokens == first.usage.completion_tokens
        await sdk.close()


async def test_streamed_miss_is_stored_and_tool_calls_replay(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        sdk = openai.AsyncOpenAI(api_key=MASTER, base_url=str(client.make_url("/v1")), max_retries=0)
        body = chat('CALL_TOOL get_weather {"city": "Oslo"}', tools=[{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])

        async def streamed() -> tuple[str, list[tuple[str, str]], str]:
            raw = await sdk.chat.completions.with_raw_response.create(**body, stream=True)
            calls: dict[int, list[str]] = {}
            text = []
            async for chunk in raw.parse():
                for choice in chunk.choices:
                    text.append(choice.delta.content or "")
                    for tc in choice.delta.tool_calls or []:
                        entry = calls.setdefault(tc.index, ["", ""])
                        if tc.function and tc.function.name:
                            entry[0] = tc.function.name
                        if tc.function and tc.function.arguments:
                            entry[1] += tc.function.arguments
            return raw.headers["x-relaygate-cache"], [(n, a) for n, a in calls.values()], "".join(text)

        status1, calls1, text1 = await streamed()
        status2, calls2, text2 = await streamed()
        assert (status1, status2) == ("miss", "hit-exact")
        assert calls1 and calls2 == calls1 and text2 == text1
        await sdk.close()


async def test_cached_answer_replays_as_an_anthropic_stream(tmp_path: Any) -> None:
    async with gateway_client(make_config({}, tmp_path)) as client:
        sdk = anthropic.AsyncAnthropic(api_key=MASTER, base_url=str(client.make_url("")), max_retries=0)
        # the anthropic SDK 2.x has no `temperature` argument: it goes in the body as is
        params: dict[str, Any] = {"model": "mock", "max_tokens": 100, "extra_body": {"temperature": 0},
                                  "messages": [{"role": "user", "content": "Name a colour"}]}
        first = await sdk.messages.create(**params)
        async with sdk.messages.stream(**params) as stream:
            final = await stream.get_final_message()
        assert stream.response.headers["x-relaygate-cache"] == "hit-exact"
        assert final.content[0].text == first.content[0].text  # type: ignore[union-attr]
        assert final.usage.output_tokens == first.usage.output_tokens
        await sdk.close()
