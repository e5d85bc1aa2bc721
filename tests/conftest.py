"""Shared fixtures: a real SQLCipher node per test, its Flask app and logged-in clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient

from edge_node.api import create_app
from edge_node.api.openapi import build_openapi, openapi_path
from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX, init_node, load_demo
from edge_node.config import Settings, load_settings
from edge_node.node import Node
from tests.helpers import FakeClock

pytest_plugins = ["tests.hq_fixtures", "tests.service_marks"]

Headers = dict[str, str]


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node initialised once per session with demo data (Argon2 hashing is slow on purpose)."""
    data_dir = tmp_path_factory.mktemp("template") / "node"
    template = load_settings(str(data_dir), environ={})
    init_node(template, "ISB-01")
    opened = Node(template)
    load_demo(opened)
    opened.close()
    return data_dir


@pytest.fixture
def settings(tmp_path: Path, template_dir: Path) -> Settings:
    """Settings of a fresh copy of the demo node in a temporary data directory."""
    data_dir = tmp_path / "node"
    shutil.copytree(template_dir, data_dir)
    return load_settings(str(data_dir), environ={})


@pytest.fixture
def node(settings: Settings) -> Iterator[Node]:
    """An initialised node with demo staff and counters (encrypted database)."""
    opened = Node(settings)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test advances it."""
    return FakeClock()


@pytest.fixture
def clocked_node(settings: Settings, clock: FakeClock) -> Iterator[Node]:
    """The demo node running on the fake `clock`; modules alias it as `node`."""
    opened = Node(settings, now=clock)
    yield opened
    opened.close()


@pytest.fixture
def app(node: Node) -> Iterator[Flask]:
    """The node's Flask app; every JSON response is checked against the OpenAPI document."""
    flask_app = create_app(node, {"TESTING": True})
    mismatches: list[str] = []
    flask_app.after_request(response_checker(mismatches))
    yield flask_app
    assert not mismatches, "responses that break the OpenAPI document:\n" + "\n".join(mismatches)


def response_checker(mismatches: list[str]) -> Callable[[Response], Response]:
    """An after_request hook recording responses that do not match their declared schema."""
    document = build_openapi()

    def check(response: Response) -> Response:
        rule = request.url_rule
        if rule is None or not rule.rule.startswith("/api/"):
            return response
        operation = document["paths"][openapi_path(rule.rule)].get(request.method.lower())
        declared = operation["responses"].get(str(response.status_code)) if operation else None
        if declared is None:
            mismatches.append(f"{request.method} {rule.rule}: undeclared status "
                              f"{response.status_code}")
            return response
        schema = declared["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = document["components"]["schemas"]["Error"]
        try:
            jsonschema.validate(response.get_json(), schema)
        except jsonschema.ValidationError as exc:
            mismatches.append(f"{request.method} {rule.rule} {response.status_code}: "
                              f"{exc.message}")
        return response

    return check


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def login(client: FlaskClient) -> Callable[[str], Headers]:
    """`login("operator")` returns Authorization headers for that demo account."""
    cache: dict[str, Headers] = {}

    def _login(user: str) -> Headers:
        if user not in cache:
            resp = client.post("/api/auth/login", json={
                "username": user, "password": user + DEMO_PASSWORD_SUFFIX})
            assert resp.status_code == 200, resp.get_json()
            cache[user] = {"Authorization": f"Bearer {resp.get_json()['token']}"}
        return cache[user]

    return _login
