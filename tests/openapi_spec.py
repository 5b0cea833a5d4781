"""OpenAI's published OpenAPI document (../shared/specs), loaded once per session, as
JSON-schema validators for what relaygate answers and accepts."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "openai-openapi.yaml"


@functools.cache
def _spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open() as f:
        return yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` (still used in places) -> JSON-schema null type."""
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def _registry() -> Registry:
    doc = _nullable(_spec())
    return Registry().with_resource("urn:openai", Resource.from_contents(doc, default_specification=DRAFT202012))


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{schema_name}"},
                                           registry=_registry())


def validate(schema_name: str, instance: Any) -> None:
    """Raises `jsonschema.ValidationError` when `instance` breaks the named schema."""
    errors = sorted(validator(schema_name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(f"{schema_name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5]))
