"""canonicalize_tool_result: volatile fields dropped at any depth, keys sorted, stable text."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relaygate.agent import canonicalize_tool_result


def test_drops_volatile_fields_recursively_and_sorts_keys() -> None:
    result = {
        "b": 1,
        "a": {"timestamp": "2026-01-01T00:00:00Z", "value": [1, {"Request-Id": "abc", "x": 2}]},
        "elapsedMs": 3.2,
        "id": "kept",
        "created_at": 17,  # when the thing was made is a fact about it, not about the call
        "date": "2026-01-02",
    }
    assert canonicalize_tool_result(result) == (
        '{"a":{"value":[1,{"x":2}]},"b":1,"created_at":17,"date":"2026-01-02","id":"kept"}')


def test_json_text_is_parsed_and_other_text_is_kept() -> None:
    assert canonicalize_tool_result('{"z": 1, "a": 2, "took": 5}') == '{"a":2,"z":1}'
    assert canonicalize_tool_result("plain output\n") == "plain output\n"


def test_custom_drop_list() -> None:
    assert canonicalize_tool_result({"a": 1, "timestamp": 2, "secret": 3}, drop_keys=["secret"]) == '{"a":1,"timestamp":2}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _shuffle(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffle(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffle(v, rng) for v in value]
    return value


# Top level is an object or array: a bare string is read as (possibly) JSON text.
json_documents = st.dictionaries(st.text(max_size=6), json_values, max_size=5) | st.lists(json_values, max_size=5)


@given(json_documents, st.integers(0, 1000))
def test_key_order_never_matters_and_canonical_form_is_a_fixed_point(value: Any, seed: int) -> None:
    canonical = canonicalize_tool_result(value)
    assert canonicalize_tool_result(_shuffle(value, random.Random(seed))) == canonical
    assert canonicalize_tool_result(json.loads(canonical)) == canonical
