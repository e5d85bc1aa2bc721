"""The read-only JSON API for agencies' own systems, under /api/v1 (bearer tokens).

No cookies, no CSRF: each request carries `Authorization: Bearer <token>`
(hq/console/api_tokens.py). An agency officer's token reads its own agency's
applications only; fleet rows need a fleet_admin, monitoring_officer or admin token.
Errors are `{ok: false, error, status}`; every read (and every refusal of a known token)
is audited in `hq_actions`. No personal data is returned.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, abort, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from hq.console import actions, api_tokens, openapi, security
from hq.fleet import fleet

bp = Blueprint("api", __name__, url_prefix="/api/v1")
F = TypeVar("F", bound=Callable[..., Any])
APPLICATION_ROLES = frozenset({"agency_officer", "admin", "auditor"})
FLEET_ROLES = frozenset({"fleet_admin", "monitoring_officer", "admin"})
MESSAGES = {400: "bad request", 401: "a valid bearer token is required",
            403: "this token may not read this", 404: "no such resource",
            405: "read-only API: GET only"}


def error(status: int, message: str | None = None) -> tuple[Response, int]:
    """The one error shape."""
    text = message or MESSAGES.get(status, "request refused")
    return jsonify(ok=False, error=text, status=status), status


def http_error(exc: HTTPException) -> tuple[Response, int]:
    """Any HTTP error under /api/ as JSON (the app's handler calls this)."""
    code = exc.code or 400
    return error(code, exc.description if code == 400 and exc.description else None)


def audit(outcome: str) -> None:
    """One audited API read of the token's account."""
    token = g.get("api_token")
    if token is None:
        return
    with security.store().use() as db, db.transaction() as tx:
        actions.record(tx, token["username"], "api_read", request.path, outcome,
                       security.client(), request.query_string.decode()[:1000] or None)


def api(roles: frozenset[str]) -> Callable[[F], F]:
    """Guard an API view: a live bearer token (401), a role in `roles` (403), audited."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return error(401)
            with security.store().use() as db:
                g.api_token = api_tokens.lookup(db, given.strip())
            if g.api_token is None:
                return error(401)
            if g.api_token["role"] not in roles:
                audit("forbidden")
                return error(403)
            try:
                response = view(*args, **kwargs)
            except HTTPException as exc:
                audit(f"refused {exc.code}")
                return http_error(exc)
            audit("ok")
            return response

        wrapper.roles = roles  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def _cursor(text: str) -> tuple[str, str]:
    """A page cursor back to (created_at, reference); 400 when it is not one of ours."""
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode() + b"==").decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        abort(400, description="bad cursor")
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, str) for v in value)):
        abort(400, description="bad cursor")
    return value[0], value[1]


def _make_cursor(created_at: str, reference: str) -> str:
    """The opaque cursor after this row."""
    return base64.urlsafe_b64encode(json.dumps([created_at, reference]).encode()
                                    ).decode().rstrip("=")


def _limit() -> int:
    """The page size (1..200; 400 otherwise)."""
    text = request.args.get("limit", str(openapi.DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= openapi.MAX_LIMIT:
        abort(400, description=f"limit must be 1..{openapi.MAX_LIMIT}")
    return int(text)


def _agency() -> str | None:
    """The agency to read: an agency token's own (another → 403), else the filter."""
    wanted = request.args.get("agency") or None
    token = g.api_token
    if token["role"] != "agency_officer":
        return wanted.lower() if wanted else None
    own = str(token["agency"] or "").lower()
    if not own or (wanted is not None and wanted.lower() != own):
        abort(403)
    return own


def _since() -> str | None:
    """The `since` filter as given, after checking it is ISO 8601 (400 otherwise)."""
    since = request.args.get("since") or None
    if since is not None:
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            abort(400, description="since must be ISO 8601")
    return since


def _where() -> tuple[str, list[Any]]:
    """Conditions from the token's scope and the filters."""
    sql, params = "created_at IS NOT NULL", []
    for column, value in (("lower(agency_code)", _agency()), ("status", request.args.get("status")),
                          ("center_id", request.args.get("center")), ("created_at >", _since())):
        if value:
            sql += f" AND {column}{'=' if column.endswith('>') else ' ='} ?"
            params.append(value)
    cursor = request.args.get("cursor")
    if cursor:
        created, reference = _cursor(cursor)
        sql += " AND (created_at > ? OR (created_at = ? AND reference > ?))"
        params += [created, created, reference]
    return sql, params


@bp.get("/applications")
@api(APPLICATION_ROLES)
def applications() -> Response:
    """A page of applications, oldest first, with the next page's link."""
    limit = _limit()
    where, params = _where()
    fields = openapi.APPLICATION_FIELDS
    with security.store().use() as db:
        found = db.execute(f"SELECT {', '.join(fields)} FROM hq_applications WHERE {where} "
                           "ORDER BY created_at, reference LIMIT ?",
                           [*params, limit + 1]).fetchall()
    items = [dict(zip(fields, row, strict=True)) for row in found[:limit]]
    following = None
    if len(found) > limit:
        args: dict[str, Any] = {k: v for k, v in request.args.items()
                                if k not in ("cursor", "limit")}
        last = items[-1]
        following = url_for("api.applications", **args, limit=limit,
                            cursor=_make_cursor(last["created_at"], last["reference"]))
    return jsonify(ok=True, items=items, next=following)


@bp.get("/fleet")
@api(FLEET_ROLES)
def fleet_rows() -> Response:
    """One row per node."""
    with security.store().use() as db:
        rows = fleet(db)
    return jsonify(ok=True, items=rows)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document (public: it holds no data)."""
    return jsonify(openapi.document())
