"""Health, login/logout and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from edge_node import __version__
from edge_node.api import sessions
from edge_node.api.openapi import build_openapi
from edge_node.api.routing import api_route, bearer_token, client_address, node
from edge_node.api.schema import Field
from edge_node.api.shapes import BOOL, OK, STR, obj
from edge_node.domain.roles import ANY_ROLE
from edge_node.errors import EdgeError
from sync.changes import outbox_stats

bp = Blueprint("system", __name__, url_prefix="/api")

STAFF = obj(id=STR, username=STR, full_name=STR, role=STR, language=STR)


@api_route(bp, "/health", "GET", summary="Liveness and basic node facts", roles=None,
           response=obj(ok=BOOL, node_id=STR, center_id=STR, version=STR,
                        outbox={"type": "object"}))
def health() -> dict[str, Any]:
    """Answer without authentication: used by monitoring and the doctor."""
    n = node()
    return {"ok": True, "node_id": n.node_id, "center_id": n.center_id,
            "version": __version__, "outbox": outbox_stats(n.reader().conn)}


@api_route(bp, "/openapi.json", "GET", summary="This API's OpenAPI 3 document", roles=None,
           response={"type": "object"})
def openapi() -> dict[str, Any]:
    """The document is built from the same specs that validate requests."""
    return build_openapi()


@api_route(bp, "/auth/login", "POST", summary="Offline staff login; returns a bearer token",
           roles=None, response=obj(token=STR, staff=STAFF), errors=(401, 423, 429),
           body=[Field("username", "string", min=1, max=64),
                 Field("password", "string", min=1, max=256)])
def login(body: dict[str, Any]) -> dict[str, Any]:
    """Check the password against the local hash (failures count toward lockout)."""
    result = sessions.login(node(), body["username"], body["password"], client_address())
    if isinstance(result, EdgeError):
        raise result
    return result


@api_route(bp, "/auth/logout", "POST", summary="End this session", roles=ANY_ROLE,
           response=OK)
def logout() -> dict[str, Any]:
    """Delete the session row and its cache entry."""
    sessions.end_session(node(), bearer_token(), dict(g.staff))
    return {"ok": True}


@api_route(bp, "/auth/me", "GET", summary="The logged-in staff member", roles=ANY_ROLE,
           response=STAFF)
def me() -> dict[str, Any]:
    """Who this token belongs to."""
    return dict(g.staff)
