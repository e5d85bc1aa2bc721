"""The API contract: OpenAPI matches the routes, one error shape, bad input changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import import_module
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate as validate_spec

from edge_node.api import BLUEPRINTS
from edge_node.api.openapi import openapi_path
from edge_node.api.routing import ROUTES, RouteSpec
from edge_node.bootstrap import DEMO_STAFF
from edge_node.node import Node

Headers = dict[str, str]


def outbox_mark(node: Node) -> tuple[int, int | None]:
    """(count, max seq) of the outbox: equal before and after means nothing was written."""
    row = node.reader().execute("SELECT count(*), max(seq) FROM sync_outbox").fetchone()
    return row[0], row[1]


def assert_error(resp: Any, status: int, fragment: str) -> None:
    """The response is the one JSON error shape with a message containing `fragment`."""
    body = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"ok", "error", "errors", "status"}
    assert body["ok"] is False and body["status"] == status
    assert fragment in body["error"], body["error"]
    assert body["errors"] and all(isinstance(e, str) for e in body["errors"])


def test_openapi_document_is_valid(client: FlaskClient) -> None:
    """The served document validates as OpenAPI 3.1."""
    validate_spec(client.get("/api/openapi.json").get_json())


def test_openapi_lists_exactly_the_api_routes(app: Flask, client: FlaskClient) -> None:
    """Every /api route and method is documented, and nothing else is."""
    document = client.get("/api/openapi.json").get_json()
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    served = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
        for method in rule.methods or () if method not in {"HEAD", "OPTIONS"}
    }
    assert documented == served


def test_protected_operations_declare_roles(client: FlaskClient) -> None:
    """Every operation but health, login and the document itself needs a bearer token."""
    document = client.get("/api/openapi.json").get_json()
    public = {("/api/health", "get"), ("/api/openapi.json", "get"), ("/api/auth/login", "post")}
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if (path, method) in public:
                assert "security" not in op
            else:
                assert op["security"] == [{"bearer": []}] and op["x-roles"], (path, method)


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"services": "nadra_snic_renewal"}, "services: expected array, got string"),
    ({"services": []}, "services: must be at least 1 items"),
    ({"services": [1, 2]}, "services: every item must be string"),
    ({"services": ["nadra_snic_renewal"], "priority": 3}, "priority: expected string"),
    ({"services": ["nadra_snic_renewal"], "priority": "DROP TABLE"}, "priority: has the wrong"),
    ({"services": ["nadra_snic_renewal"], "colour": "red"}, "colour: unknown field"),
    ({"priority": "normal"}, "services: is required"),
    ({"services": ["nadra_snic_renewal", "nadra_snic_renewal"]}, "listed twice"),
    ({"services": ["nadra_snic_renewal"], "priority": "vip"}, "unknown priority class"),
    ({"services": ["nadra_snic_renewal"], "citizen_id": "not-a-uuid"}, "citizen_id: has the"),
])
def test_visit_validation(client: FlaskClient, login: Callable[[str], Headers], node: Node,
                          payload: dict[str, Any], fragment: str) -> None:
    """Each invalid visit gets a 400 naming the problem, and writes nothing."""
    headers = login("reception")
    before = outbox_mark(node)
    assert_error(client.post("/api/visits", json=payload, headers=headers), 400, fragment)
    assert outbox_mark(node) == before


def test_unknown_service_is_404(client: FlaskClient, login: Callable[[str], Headers],
                                node: Node) -> None:
    """A service code not in the catalog is named in the error."""
    headers = login("reception")
    before = outbox_mark(node)
    resp = client.post("/api/visits", json={"services": ["nadra_teleport"]}, headers=headers)
    assert_error(resp, 404, "unknown service: nadra_teleport")
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("data", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'"just a string"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
])
def test_malformed_bodies(client: FlaskClient, login: Callable[[str], Headers], node: Node,
                          data: bytes, fragment: str) -> None:
    """Garbage bodies are refused with the error shape; the process stays up."""
    headers = login("reception")
    before = outbox_mark(node)
    resp = client.post("/api/visits", data=data, content_type="application/json",
                       headers=headers)
    assert_error(resp, 400, fragment)
    assert outbox_mark(node) == before
    assert client.get("/api/health").status_code == 200


def db_snapshot(node: Node) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: equal before and after means nothing was written at all."""
    db = node.reader()
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {t: sorted(map(tuple, db.execute(f"SELECT * FROM [{t}]").fetchall()), key=repr)
            for t in tables}


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """A JSON object whose one field holds `depth` levels of arrays (or objects)."""
    return b'{"services": ' + opener * (depth - 1) + closer * (depth - 1) + b"}"


DEEP_BODIES = {"40 arrays": nested(40), "40 objects": nested(40, b'{"a": ', b"}"),
               "30000 arrays": nested(30_000), "30000 unclosed": b"[" * 30_000}


def body_routes() -> list[RouteSpec]:
    """Every route that reads a JSON body (its blueprint modules imported first)."""
    for name in BLUEPRINTS:
        import_module(name)
    return [spec for spec in ROUTES if spec.body is not None]


BODY_ROUTES = body_routes()


@pytest.mark.parametrize("spec", BODY_ROUTES, ids=lambda s: f"{s.method} {s.rule}")
@pytest.mark.parametrize("deep", DEEP_BODIES.values(), ids=DEEP_BODIES)
def test_deeply_nested_bodies_are_400(client: FlaskClient, login: Callable[[str], Headers],
                                      node: Node, spec: RouteSpec, deep: bytes) -> None:
    """Nesting thousands deep is a 400 on every route with a body, not a RecursionError."""
    headers = login(next(u for u, _, r in DEMO_STAFF if r in spec.roles)) \
        if spec.roles is not None else {}
    before = db_snapshot(node)
    path = re.sub(r"<[^>]+>", "00000000-0000-4000-8000-000000000000", spec.rule)
    resp = client.open(path, method=spec.method, data=deep,
                       content_type="application/json", headers=headers)
    assert_error(resp, 400, "request body")
    assert db_snapshot(node) == before


@pytest.mark.parametrize(("method", "path", "user", "body"), [
    ("POST", "/api/citizens", "reception",
     '{"cnic": "35202-1234567-1", "name": "Ali\\ud800"}'),
    ("POST", "/api/citizens", "reception",
     '{"cnic": "35202-1234567-1", "name": "Ali", "phone": "0300\\udfff1234567"}'),
    ("POST", "/api/visits", "reception", '{"services": ["nadra_snic_renewal\\ud800"]}'),
    ("POST", "/api/visits", "reception", '{"services": ["\\udc80"]}'),
    ("POST", "/api/visits", "reception", '{"services": ["nadra_snic_renewal"], "\\ud800": 1}'),
    ("POST", "/api/auth/login", None, '{"username": "\\ud800", "password": "x"}'),
])
def test_lone_surrogates_are_400(client: FlaskClient, login: Callable[[str], Headers],
                                 node: Node, method: str, path: str, user: str | None,
                                 body: str) -> None:
    """JSON can spell a lone surrogate; it is refused up front, never written."""
    headers = login(user) if user else {}
    before = db_snapshot(node)
    resp = client.open(path, method=method, data=body.encode(),
                       content_type="application/json", headers=headers)
    assert_error(resp, 400, "valid Unicode")
    assert db_snapshot(node) == before


def test_patch_with_a_lone_surrogate_changes_nothing(client: FlaskClient,
                                                     login: Callable[[str], Headers],
                                                     node: Node) -> None:
    """Editing an existing citizen's name with a lone surrogate: 400, the row unchanged."""
    headers = login("reception")
    made = client.post("/api/citizens", json={"cnic": "35202-1234567-1", "name": "Ali"},
                       headers=headers).get_json()
    before = db_snapshot(node)
    resp = client.patch(f"/api/citizens/{made['id']}", data=b'{"name": "Ali\\ud800"}',
                        content_type="application/json", headers=headers)
    assert_error(resp, 400, "valid Unicode")
    assert db_snapshot(node) == before


def test_oversize_body_is_413(client: FlaskClient, login: Callable[[str], Headers],
                              node: Node) -> None:
    """A body over max_body_bytes is refused before it is parsed."""
    headers = login("reception")
    before = outbox_mark(node)
    huge = b'{"services": ["' + b"a" * (node.settings["max_body_bytes"] + 10) + b'"]}'
    resp = client.post("/api/visits", data=huge, content_type="application/json",
                       headers=headers)
    assert_error(resp, 413, "too large")
    assert outbox_mark(node) == before


def test_unknown_route_and_method(client: FlaskClient) -> None:
    """Routing errors use the same shape."""
    assert_error(client.get("/api/nothing-here"), 404, "not found")
    assert_error(client.delete("/api/health"), 405, "method not allowed")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/api/health", {"GET", "HEAD", "OPTIONS"}),
    ("PUT", "/api/citizens/00000000-0000-4000-8000-000000000000",
     {"GET", "HEAD", "OPTIONS", "PATCH"}),
    ("GET", "/api/auth/login", {"POST", "OPTIONS"}),
])
def test_405_says_which_methods_are_allowed(client: FlaskClient, method: str, path: str,
                                            allowed: set[str]) -> None:
    """A 405 carries the Allow header (RFC 9110), in the one error shape."""
    resp = client.open(path, method=method)
    assert_error(resp, 405, "method not allowed")
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic abc", "bearer "])
def test_missing_or_bad_token(client: FlaskClient, header: str | None) -> None:
    """No session, no access: 401 with a hint."""
    headers = {"Authorization": header} if header is not None else {}
    resp = client.post("/api/visits", json={"services": ["nadra_snic_renewal"]},
                       headers=headers)
    assert_error(resp, 401, "log")


def test_wrong_role_is_403(client: FlaskClient, login: Callable[[str], Headers],
                           node: Node) -> None:
    """The kiosk may rate, not issue tickets."""
    headers = login("kiosk")
    before = outbox_mark(node)
    resp = client.post("/api/visits", json={"services": ["nadra_snic_renewal"]},
                       headers=headers)
    assert_error(resp, 403, "role 'kiosk' may not do this")
    assert outbox_mark(node) == before


def test_health_is_public_and_has_no_pii(client: FlaskClient) -> None:
    """Monitoring needs no token; it sees ids and counts only."""
    body = client.get("/api/health").get_json()
    assert body["ok"] is True and body["center_id"] == "ISB-01"
    assert set(body["outbox"]) == {"count", "first_seq", "last_seq"}
