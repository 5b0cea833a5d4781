"""JSON Schema -> Gemini's `responseSchema` / function `parameters` (an OpenAPI 3.0
subset): `$ref`s inlined, `["T", "null"]` types made `nullable`, keywords Gemini rejects
(`additionalProperties`, `$schema`, `strict`, ...) dropped."""

from __future__ import annotations

from typing import Any

from relaygate.errors import GatewayError

_KEEP = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "propertyOrdering", "items", "anyOf", "minimum", "maximum", "minLength", "maxLength",
    "pattern", "example", "default", "minProperties", "maxProperties",
})
_MAX_DEPTH = 32


def gemini_schema(schema: Any, param: str) -> Any:
    if not isinstance(schema, dict):
        return schema
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _convert(schema, defs, param, 0, ())


def _convert(node: Any, defs: dict[str, Any], param: str, depth: int, seen: tuple[str, ...]) -> Any:
    if depth > _MAX_DEPTH:
        raise GatewayError(400, f"{param}: schema nests too deeply for Gemini", "invalid_request_error",
                           "unsupported_parameter", param)
    if isinstance(node, list):
        return [_convert(n, defs, param, depth + 1, seen) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise GatewayError(400, f"{param}: recursive schema ($ref {ref}) cannot be expressed for Gemini",
                               "invalid_request_error", "unsupported_parameter", param)
        if name not in defs:
            raise GatewayError(400, f"{param}: unresolvable $ref {ref}", "invalid_request_error",
                               "invalid_schema", param)
        return _convert(defs[name], defs, param, depth + 1, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: _convert(v, defs, param, depth + 1, seen) for k, v in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _convert(value, defs, param, depth + 1, seen)
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if "null" in value:
                out["nullable"] = True
            out["type"] = kinds[0] if len(kinds) == 1 else "string"
            if len(kinds) > 1:
                out.pop("type")
                out["anyOf"] = [{"type": k} for k in kinds]
        else:
            out[key] = value
    if "const" in node and "enum" not in out:
        out["enum"] = [node["const"]]
    return out
