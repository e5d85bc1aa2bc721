"""OpenAPI 3.1 document built from the registered route specs."""

from __future__ import annotations

import re
from typing import Any

from edge_node import __version__
from edge_node.api.errors import ERROR_SCHEMA
from edge_node.api.routing import ROUTES
from edge_node.api.schema import object_schema

_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_ERROR_TEXT = {400: "Invalid input", 401: "Not logged in", 403: "Role not allowed",
               404: "Not found", 409: "Conflicts with the current state",
               413: "Body too large", 423: "Account locked",
               429: "Too many failed logins from this client (see Retry-After)"}


def openapi_path(rule: str) -> str:
    """Flask's `<name>` placeholders as OpenAPI's `{name}`."""
    return _PARAM.sub(r"{\1}", rule)


def _operation(spec: Any) -> dict[str, Any]:
    """One operation object."""
    op: dict[str, Any] = {
        "summary": spec.summary,
        "tags": [spec.tag],
        "operationId": f"{spec.method.lower()}_{openapi_path(spec.rule)}",
        "responses": {str(spec.status): {"description": "Success", "content": {
            "application/json": {"schema": spec.response}}}},
    }
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in _PARAM.findall(spec.rule)]
    params += [{"name": f.name, "in": "query", "required": f.required,
                "schema": f.json_schema()} for f in spec.query]
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": object_schema(spec.body, spec.rules)}}}
    if spec.cross_field_rules:
        op["x-cross-field-rules"] = list(spec.cross_field_rules)
    errors = [400, 413] if spec.body is not None else [400]
    if spec.roles is not None:
        op["security"] = [{"bearer": []}]
        op["x-roles"] = sorted(spec.roles)
        errors += [401, 403]
    errors += [404, 409] if spec.method != "GET" or "{" in openapi_path(spec.rule) else []
    for code in sorted(set(errors) | set(spec.errors)):
        op["responses"][str(code)] = {"description": _ERROR_TEXT[code], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return op


def build_openapi() -> dict[str, Any]:
    """The whole document."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        paths.setdefault(openapi_path(spec.rule), {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Khidmat Edge node API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
