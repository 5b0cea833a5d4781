"""Conditional routing: Portkey-style queries on request facts."""

from __future__ import annotations

import re
from typing import Any

from relaygate.config.models import Condition

_MISSING = object()


def lookup(facts: dict[str, Any], path: str) -> Any:
    value: Any = facts
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _compare(value: Any, op: str, arg: Any) -> bool:
    if value is _MISSING:
        return op in ("$ne", "$nin")
    try:
        if op == "$eq":
            return bool(value == arg)
        if op == "$ne":
            return bool(value != arg)
        if op == "$in":
            return value in arg
        if op == "$nin":
            return value not in arg
        if op == "$gt":
            return bool(value > arg)
        if op == "$gte":
            return bool(value >= arg)
        if op == "$lt":
            return bool(value < arg)
        if op == "$lte":
            return bool(value <= arg)
        if op == "$regex":
            return re.search(str(arg), str(value)) is not None
    except TypeError:
        return False
    raise ValueError(f"unknown operator {op}")


def matches(query: dict[str, Any], facts: dict[str, Any]) -> bool:
    for key, spec in query.items():
        if key == "$and":
            if not all(matches(q, facts) for q in spec):
                return False
        elif key == "$or":
            if not any(matches(q, facts) for q in spec):
                return False
        elif isinstance(spec, dict):
            value = lookup(facts, key)
            if not all(_compare(value, op, arg) for op, arg in spec.items()):
                return False
        elif lookup(facts, key) != spec:
            return False
    return True


def choose(conditions: tuple[Condition, ...], default: str | None, facts: dict[str, Any]) -> str | None:
    for cond in conditions:
        if matches(cond.query, facts):
            return cond.then
    return default
