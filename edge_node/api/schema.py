"""Declared request bodies: one spec gives both validation and the OpenAPI schema.

Validation messages name the field and say what was expected, so a client
(or a person reading the UI) can fix the request; unknown fields are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
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
    item_pattern: str | None = None
    unique: bool = False
    format: str | None = None
    domain_checked: bool = False
    """`pattern` and `item_pattern` are declared only: the domain's parser enforces exactly
    them, with messages that say what is wrong (tests check the two agree)."""
    shape: str | None = None
    """With `domain_checked`: a looser regex checked here first ("has the wrong format")."""

    def coerce(self, value: Any) -> Any:
        """JSON has one number type: 2.0 is the integer 2 (as JSON Schema counts it)."""
        if self.type == "integer" and isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def check(self, value: Any) -> str | None:
        """Return a message when `value` (coerced) does not fit this field, else None."""
        expected = _PY_TYPES[self.type]
        if not isinstance(value, expected) or (self.type == "integer" and isinstance(value, bool)):
            return f"{self.name}: expected {self.type}, got {_json_type(value)}"
        if self.enum is not None and value not in self.enum:
            return f"{self.name}: must be one of {', '.join(self.enum)}"
        checked_here = self.shape if self.domain_checked else self.pattern
        if checked_here is not None and not re.fullmatch(checked_here, str(value)):
            return f"{self.name}: has the wrong format"
        if self.format == "date" and not _is_date(str(value)):
            return f"{self.name}: must be a date written YYYY-MM-DD"
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

    def json_schema(self, nullable: bool = False) -> dict[str, Any]:
        """This field as a JSON Schema property; `nullable`: null means not given."""
        out: dict[str, Any] = {"type": [self.type, "null"] if nullable else self.type}
        limits = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
                  "integer": ("minimum", "maximum")}.get(self.type)
        if limits and self.min is not None:
            out[limits[0]] = self.min
        if limits and self.max is not None:
            out[limits[1]] = self.max
        if self.enum:
            out["enum"] = [*self.enum, *([None] if nullable else [])]
        if self.pattern:
            out["pattern"] = anchored(self.pattern)
        if self.format:
            out["format"] = self.format
        if self.items:
            out["items"] = {"type": self.items}
            if self.item_pattern:
                out["items"]["pattern"] = anchored(self.item_pattern)
        if self.unique:
            out["uniqueItems"] = True
        if self.description:
            out["description"] = self.description
        return out


def anchored(pattern: str) -> str:
    """A regex matching whole values only (JSON Schema patterns search, Python's fullmatch)."""
    return f"^(?:{pattern})$"


def _is_date(text: str) -> bool:
    """True when `text` (already YYYY-MM-DD shaped) names a day of the calendar."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


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
        message = f.check(f.coerce(payload[f.name]))
        if message:
            errors.append(message)
    if errors:
        raise ValidationError("invalid request: " + "; ".join(errors), errors)
    return {f.name: f.coerce(payload.get(f.name)) for f in fields}


def object_schema(fields: Sequence[Field], rules: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """JSON Schema of a request body made of `fields` (an optional one may be null: not given)
    and `rules` over several fields (see `at_least_one`, `required_when`)."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: f.json_schema(nullable=not f.required) for f in fields},
        "required": [f.name for f in fields if f.required],
    }
    if rules:
        schema["allOf"] = list(rules)
    return schema


def at_least_one(fields: Sequence[Field]) -> dict[str, Any]:
    """Rule: at least one of `fields` is given and not null (a PATCH must change something)."""
    return {"anyOf": [{"required": [f.name], "properties": {f.name: {"not": {"type": "null"}}}}
                      for f in fields]}


def required_when(field: str, values: Sequence[str], needed: str) -> dict[str, Any]:
    """Rule: `needed` is given and not null when `field` is one of `values`."""
    return {"if": {"required": [field], "properties": {field: {"enum": list(values)}}},
            "then": {"required": [needed], "properties": {needed: {"not": {"type": "null"}}}}}
