"""The OpenAPI 3.1 document of the read-only JSON API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
APPLICATION_FIELDS = ("reference", "node_id", "center_id", "service_code", "agency_code",
                      "status", "created_at", "updated_at", "decided_at")


def _error(description: str) -> dict[str, Any]:
    """A response with the one error shape."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _applications_path() -> dict[str, Any]:
    """GET /applications."""
    return {"get": {
        "summary": "Applications, oldest first (an agency token sees its own agency only)",
        "description": "No personal data: citizen names, CNICs, phones and citizen ids are "
                       "not part of this API.",
        "parameters": [
            _query("status", "Only this status.", {"type": "string", "maxLength": 40}),
            _query("center", "Only this center id.", {"type": "string", "maxLength": 80}),
            _query("agency", "Only this agency (an agency token: its own only, else 403).",
                   {"type": "string", "maxLength": 40}),
            _query("since", "Created at or after (ISO 8601).",
                   {"type": "string", "format": "date-time"}),
            _query("limit", "Page size.", {"type": "integer", "minimum": 1,
                                           "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            _query("cursor", "From the previous page's `next`.", {"type": "string"}),
        ],
        "responses": {
            "200": {"description": "One page",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/ApplicationPage"}}}},
            "400": _error("A bad parameter"), "401": _error("No valid token"),
            "403": _error("The token's role or agency may not read this"),
        }}}


def _fleet_path() -> dict[str, Any]:
    """GET /fleet."""
    return {"get": {
        "summary": "One row per node (fleet_admin, monitoring_officer and admin tokens)",
        "responses": {
            "200": {"description": "The fleet",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Fleet"}}}},
            "401": _error("No valid token"), "403": _error("The token's role may not read this"),
        }}}


def _schemas() -> dict[str, Any]:
    """Components: the error shape, an application, a page, the fleet."""
    nullable = {"type": ["string", "null"]}
    return {
        "Error": {"type": "object", "required": ["ok", "error", "status"], "properties": {
            "ok": {"const": False}, "error": {"type": "string"},
            "status": {"type": "integer"}}},
        "Application": {"type": "object",
                        "properties": {f: nullable for f in APPLICATION_FIELDS}},
        "ApplicationPage": {"type": "object", "required": ["ok", "items", "next"],
                            "properties": {
                                "ok": {"const": True},
                                "items": {"type": "array", "items": {
                                    "$ref": "#/components/schemas/Application"}},
                                "next": {"type": ["string", "null"],
                                         "description": "The next page's URL, or null"}}},
        "Fleet": {"type": "object", "required": ["ok", "items"], "properties": {
            "ok": {"const": True},
            "items": {"type": "array", "items": {"type": "object"}}}},
    }


def document() -> dict[str, Any]:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Khidmat Edge HQ read-only API", "version": "1",
                 "description": "Read-only JSON for agencies' own systems. Every read is "
                                "audited. Bearer tokens from `edge-hq api-token create`. "
                                "No personal data: citizen names are not part of this API."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {"/applications": _applications_path(), "/fleet": _fleet_path()},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": _schemas()},
    }
