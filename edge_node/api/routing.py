"""The `api_route` decorator: auth, role check, body validation and OpenAPI in one place.

Every JSON route is declared through it, so the OpenAPI document is built
from the same specs that validate requests, and no route can forget its
role check.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from edge_node import lifecycle
from edge_node.api.schema import Field, validate
from edge_node.domain import staff as staff_domain
from edge_node.errors import AuthError, ForbiddenError, ValidationError
from edge_node.node import Node


@dataclass(frozen=True)
class RouteSpec:
    """What one route accepts and returns, for validation and OpenAPI."""

    rule: str
    method: str
    summary: str
    roles: frozenset[str] | None
    body: tuple[Field, ...] | None
    query: tuple[Field, ...]
    response: dict[str, Any]
    status: int
    tag: str
    errors: tuple[int, ...] = ()
    rules: tuple[dict[str, Any], ...] = ()
    cross_field_rules: tuple[str, ...] = ()


ROUTES: list[RouteSpec] = []
MAX_JSON_DEPTH = 32  # the deepest body any route declares is 3 levels
NOT_JSON = "request body is not valid JSON"
NOT_UNICODE = "request body: text must be valid Unicode (a lone surrogate is not)"


def node() -> Node:
    """The Node of the running app."""
    return lifecycle.current_node()


def api_route(
    bp: Blueprint, rule: str, method: str, *, summary: str,
    roles: Collection[str] | None, response: dict[str, Any],
    body: Sequence[Field] | None = None, query: Sequence[Field] = (), status: int = 200,
    errors: Sequence[int] = (), rules: Sequence[dict[str, Any]] = (),
    cross_field_rules: Sequence[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a JSON route; `roles=None` makes it public (health, login, openapi).

    `errors` adds error statuses beyond those implied by body, roles and path. `rules` are
    JSON Schema rules over several body fields (the domain enforces them);
    `cross_field_rules` the messages of 400s for rules JSON Schema cannot state (an end
    before its start), declared in the document as `x-cross-field-rules`.
    """
    prefix = bp.url_prefix or ""
    spec = RouteSpec(prefix + rule, method, summary, frozenset(roles) if roles is not None
                     else None, tuple(body) if body is not None else None, tuple(query),
                     response, status, bp.name, tuple(errors), tuple(rules),
                     tuple(cross_field_rules))
    ROUTES.append(spec)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> tuple[Response, int]:
            if spec.roles is not None:
                _authorize(spec.roles)
            if spec.body is not None:
                kwargs["body"] = validate(spec.body, _json_body())
            if spec.query:
                kwargs["query"] = validate(spec.query, request.args.to_dict())
            return jsonify(view(**kwargs)), spec.status

        bp.add_url_rule(rule, endpoint=view.__name__, view_func=wrapper, methods=[method])
        return wrapper

    return decorate


def _json_body() -> Any:
    """The parsed JSON body, or ValidationError: not JSON, nested too deep, or not Unicode.

    Parsed here rather than by Flask: a body nested thousands deep makes the
    parser raise RecursionError, which is no ValueError and would end in a 500.
    """
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError(NOT_JSON) from None
    _check_tree(payload)
    return payload


def _check_tree(payload: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and text that is not valid Unicode.

    JSON may spell a lone surrogate (`"\\ud800"`); Python decodes it into a str
    that can never be encoded, so it would fail only later, in the writer.
    """
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(f"request body: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and not _is_unicode(value):
            raise ValidationError(NOT_UNICODE)


def _is_unicode(text: str) -> bool:
    """False when `text` holds a lone surrogate (it has no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bearer_token() -> str:
    """The token of `Authorization: Bearer …`, or AuthError."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("not logged in: send Authorization: Bearer <token>")
    return token.strip()


def client_address() -> str:
    """The address the request came from (the node serves the LAN directly, no proxy)."""
    return request.remote_addr or "unknown"


def _authorize(roles: frozenset[str]) -> None:
    """Load the session's staff into `g.staff`, refusing roles not in `roles`."""
    n = node()
    token = bearer_token()
    now = n.now()
    staff = n.sessions.get(token, now)
    stale = False
    if staff is None:
        staff, stale = staff_domain.session_staff(
            n.reader(), token, now, n.settings["session_idle_minutes"])
        n.sessions.put(token, staff, now)
    if staff["role"] not in roles:
        raise ForbiddenError(f"role '{staff['role']}' may not do this")
    if stale:
        n.write(lambda db: staff_domain.touch_session(db, token, now))
    g.staff = staff
    g.token = token
