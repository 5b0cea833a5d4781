"""Properties of the canonical request key."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from relaygate.cache.canonical import cache_key, canonicalize_tool_result, deterministic
from relaygate.config.models import RouteConfig
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats import openai as openai_fmt
from relaygate.routing.plan import compile_route

ROUTE = RouteConfig.model_validate({"targets": [{"provider": "mock", "model": "mock-1"}]})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def key_of(body: dict[str, Any], tenant: str = "org:a", route: RouteConfig = ROUTE, name: str = "r") -> str:
    return cache_key(openai_fmt.parse_request(body), name, route, tenant)


def base_body() -> dict[str, Any]:
    return {
        "model": "r",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp": 21, "timestamp": "2026-01-01T00:00:00Z"}'},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}],
    }


def shuffled(value: Any, rnd: Any) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), json_values)
def test_key_is_stable_under_dict_reordering(rnd: Any, extra: Any) -> None:
    body = base_body()
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"any": extra}}}
    body["messages"][3]["content"] = orjson.dumps({"result": extra, "request_id": "r1"}).decode()
    again = shuffled(copy.deepcopy(body), rnd)
    # the tool result's JSON text reordered too, with another request id and timings
    result = shuffled({"result": extra, "requestId": "r2", "elapsed_ms": 12}, rnd)
    again["messages"][3]["content"] = orjson.dumps(result).decode()
    assert key_of(again) == key_of(body)


OUTPUT_AFFECTING: list[tuple[str, Any]] = [
    ("temperature", 0.5), ("top_p", 0.9), ("max_tokens", 12), ("stop", ["END"]), ("seed", 7),
    ("n", 2), ("tool_choice", "required"), ("parallel_tool_calls", False),
    ("response_format", {"type": "json_object"}), ("logprobs", True), ("frequency_penalty", 0.5),
    ("reasoning_effort", "high"),
]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(OUTPUT_AFFECTING))
def test_key_changes_when_an_output_affecting_field_changes(change: tuple[str, Any]) -> None:
    field, value = change
    assert key_of({**base_body(), field: value}) != key_of(base_body())


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_key_changes_with_any_message_text(text: str) -> None:
    body = base_body()
    changed = copy.deepcopy(body)
    changed["messages"][1]["content"] = "Weather in Paris?" + text
    assert key_of(changed) != key_of(body)


def test_key_changes_with_tools_system_history_tenant_and_route() -> None:
    body = base_body()
    k = key_of(body)
    variants = []
    b = copy.deepcopy(body)
    b["tools"][0]["function"]["parameters"]["properties"]["units"] = {"type": "string"}
    variants.append(key_of(b))
    b = copy.deepcopy(body)
    b["messages"][0]["content"] = "You are verbose."
    variants.append(key_of(b))
    b = copy.deepcopy(body)
    b["messages"][3]["content"] = '{"temp": 22, "timestamp": "2026-01-01T00:00:00Z"}'
    variants.append(key_of(b))
    variants.append(key_of(body, tenant="org:b"))
    variants.append(key_of(body, name="other-route"))
    other_target = RouteConfig.model_validate({"targets": [{"provider": "mock", "model": "mock-2"}]})
    variants.append(key_of(body, route=other_target))
    assert k not in variants and len(set(variants)) == len(variants)


def test_key_ignores_stream_user_metadata_tool_call_ids_and_breakpoints() -> None:
    body = base_body()
    k = key_of(body)
    b = copy.deepcopy(body)
    b.update(stream=True, stream_options={"include_usage": True}, user="u1", metadata={"a": 1})
    b["messages"][2]["tool_calls"][0]["id"] = "call_zzz"
    b["messages"][3]["tool_call_id"] = "call_zzz"
    assert key_of(b) == k
    msgs = {"model": "r", "max_tokens": 10, "temperature": 0, "system": "s",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    marked = copy.deepcopy(msgs)
    marked["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    a = cache_key(anthropic_fmt.parse_request(msgs), "r", ROUTE, "t")
    assert cache_key(anthropic_fmt.parse_request(marked), "r", ROUTE, "t") == a


def test_tool_result_canonicalisation() -> None:
    text = '{"b": 1, "a": {"timestamp": 5, "x-request-id": "q", "z": [ {"took": 3, "k": 1} ]}}'
    assert canonicalize_tool_result(text) == '{"a":{"z":[{"k":1}]},"b":1}'
    assert canonicalize_tool_result("plain text 12:00") == "plain text 12:00"
    assert canonicalize_tool_result("{not json") == "{not json"


def test_deterministic_needs_temperature_zero_on_every_target() -> None:
    chat0 = openai_fmt.parse_request({**base_body()})
    assert deterministic(chat0, compile_route(ROUTE))
    unset = openai_fmt.parse_request({k: v for k, v in base_body().items() if k != "temperature"})
    assert not deterministic(unset, compile_route(ROUTE))
    warm = RouteConfig.model_validate({"targets": [
        {"provider": "mock", "model": "a"}, {"provider": "mock", "model": "b", "override_params": {"temperature": 0.7}}]})
    assert not deterministic(chat0, compile_route(warm))
