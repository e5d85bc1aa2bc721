"""Shared fixtures: a real SQLCipher node per test, its Flask app and logged-in clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge_node.api import create_app
from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX, init_node, load_demo
from edge_node.config import load_settings
from edge_node.node import Node

Headers = dict[str, str]


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    """Settings of a fresh node in a temporary data directory."""
    return load_settings(str(tmp_path / "node"), environ={})


@pytest.fixture
def node(settings: dict[str, Any]) -> Iterator[Node]:
    """An initialised node with demo staff and counters (encrypted database)."""
    init_node(settings, "ISB-01")
    opened = Node(settings)
    load_demo(opened)
    yield opened
    opened.close()


@pytest.fixture
def app(node: Node) -> Flask:
    """The node's Flask app."""
    return create_app(node, {"TESTING": True})


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
