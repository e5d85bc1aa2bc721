"""Small builders for the JSON Schemas of responses (used by OpenAPI and tests)."""

from __future__ import annotations

from typing import Any

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
ANY_OBJ: dict[str, Any] = {"type": "object"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Allow null as well as `schema`."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(**props: dict[str, Any]) -> dict[str, Any]:
    """An object whose listed properties are all required."""
    return {"type": "object", "properties": props, "required": list(props)}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    """An array of `items`."""
    return {"type": "array", "items": items}


OK = obj(ok=BOOL)
