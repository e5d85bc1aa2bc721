"""Declared request bodies: one spec gives both validation and the OpenAPI schema.

Validation messages name the field and say what was expected, so a client
(or a person reading the UI) can fix the request; unknown fields are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_node.errors import ValidationError

_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "boolean": bool, "array": list, "object": dict,
}


@dataclass(frozen=True)
class Field:
    """One field of a JSON request body."""

    name: str
    type: str
    required: bool = True
    min: int | None = None
    max: int | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    items: str | None = None
    description: str = ""

    def check(self, value: Any) -> str | None:
        """Return a message when `value` does not fit this field, else None."""
        expected = _PY_TYPES[self.type]
        if not isinstance(value, expected) or (self.type == "integer" and isinstance(value, bool)):
            return f"{self.name}: expected {self.type}, got {_json_type(value)}"
        if self.enum is not None and value not in self.enum:
            return f"{self.name}: must be one of {', '.join(self.enum)}"
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            return f"{self.name}: has the wrong format"
        return self._check_size(value)

    def _check_size(self, value: Any) -> str | None:
        """Length (strings, arrays) or value (integers) within min..max."""
        if self.type in {"string", "array"}:
            size, unit = len(value), ("characters" if self.type == "string" else "items")
        elif self.type == "integer":
            size, unit = value, ""
        else:
            return None
        if self.min is not None and size < self.min:
            return f"{self.name}: must be at least {self.min} {unit}".rstrip()
        if self.max is not None and size > self.max:
            return f"{self.name}: must be at most {self.max} {unit}".rstrip()
        if self.type == "array" and self.items:
            item_type = _PY_TYPES[self.items]
            if not all(isinstance(v, item_type) for v in value):
                return f"{self.name}: every item must be {self.items}"
        return None

    def json_schema(self) -> dict[str, Any]:
        """This field as a JSON Schema property."""
        out: dict[str, Any] = {"type": self.type}
        limits = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
                  "integer": ("minimum", "maximum")}.get(self.type)
        if limits and self.min is not None:
            out[limits[0]] = self.min
        if limits and self.max is not None:
            out[limits[1]] = self.max
        if self.enum:
            out["enum"] = list(self.enum)
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.items:
            out["items"] = {"type": self.items}
        if self.description:
            out["description"] = self.description
        return out


def _json_type(value: Any) -> str:
    """JSON name of a Python value's type, for messages."""
    for name, kind in (("null", type(None)), ("boolean", bool), ("integer", int),
                       ("number", float), ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def validate(fields: Sequence[Field], payload: Any) -> dict[str, Any]:
    """Return the valid payload, or raise ValidationError listing every problem."""
    if not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object")
    known = {f.name for f in fields}
    errors = [f"{name}: unknown field" for name in payload if name not in known]
    for f in fields:
        if f.name not in payload or payload[f.name] is None:
            if f.required:
                errors.append(f"{f.name}: is required")
            continue
        message = f.check(payload[f.name])
        if message:
            errors.append(message)
    if errors:
        raise ValidationError("invalid request: " + "; ".join(errors), errors)
    return {f.name: payload.get(f.name) for f in fields}


def object_schema(fields: Sequence[Field]) -> dict[str, Any]:
    """JSON Schema of a request body made of `fields`."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: f.json_schema() for f in fields},
        "required": [f.name for f in fields if f.required],
    }
