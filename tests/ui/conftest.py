"""UI fixtures: the UI app over a demo node, logged-in test clients, a live server, a browser."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from waitress.server import create_server

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.config import Settings
from edge_node.node import Node
from local_ui.app import create_app
from local_ui.live import POLL_S, stop_streams
from tests.helpers import FakeClock, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def clock() -> FakeClock:
    """The node's clock: the real time (a real browser is watching), moved on by tests."""
    return FakeClock(start=None)


@pytest.fixture
def node(settings: Settings, clock: FakeClock) -> Iterator[Node]:
    """The demo node on the shiftable clock (overrides conftest's `node`)."""
    opened = Node(settings, now=clock)
    yield opened
    opened.close()


@pytest.fixture
def ui_app(node: Node) -> Flask:
    """The node's app with the staff screens."""
    return create_app(node, {"TESTING": True})


def csrf_of(html: str) -> str:
    """The CSRF token in a rendered form."""
    match = _CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def ui_login(client: FlaskClient, user: str, password: str | None = None) -> Any:
    """Log in through the login form; returns the POST response."""
    page = client.get("/login")
    return client.post("/login", data={
        "username": user, "password": password or user + DEMO_PASSWORD_SUFFIX,
        "csrf_token": csrf_of(page.get_data(as_text=True))})


@pytest.fixture
def ui_client(ui_app: Flask) -> Callable[[str | None], FlaskClient]:
    """`ui_client("operator")`: a new client logged in as that demo user (None: anonymous)."""

    def make(user: str | None) -> FlaskClient:
        client = ui_app.test_client()
        if user is not None:
            resp = ui_login(client, user)
            assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
        return client

    return make


def token_of(client: FlaskClient) -> str:
    """The CSRF token held in a client's session."""
    with client.session_transaction() as sess:
        token = sess.get("csrf_token")
    assert isinstance(token, str)
    return token


@pytest.fixture
def live_server(node: Node) -> Iterator[str]:
    """The UI served by waitress on a free port, as `edge-node serve` does."""
    app = create_app(node)
    server = create_server(app, host="127.0.0.1", port=0, threads=16, ident="edge-node-test")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    stop_streams(app)
    wait_for(lambda: server.task_dispatcher.active_count == 0,
             10 * POLL_S, "open streams to notice the stop and end")
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
    server.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where screenshots go (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
