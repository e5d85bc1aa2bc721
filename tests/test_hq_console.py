"""HQ console (issue 11): sign-in with password and TOTP, lockout, throttle, CSRF, roles
on every route, the audit of actions, Urdu, and demo mode — Flask test client over a real
HQ store (SQLite; the account and audit store on PostgreSQL too)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from hq.cli.main import main as hq_cli
from hq.console import accounts, actions, demo, security
from hq.console.app import create_app
from hq.store import HQDatabase

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(hq_url: str) -> Iterator[Flask]:
    """The console over a fresh store (SQLite and PostgreSQL)."""
    console = create_app(hq_url, test_config={"TESTING": True})
    yield console
    console.extensions["hq_store"].db.close()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    """The console over a fresh SQLite store (route-by-route tests)."""
    console = create_app(str(tmp_path / "hq" / "hq.db"), test_config={"TESTING": True})
    yield console
    console.extensions["hq_store"].db.close()


def add_account(app: Flask, username: str, role: str, agency: str | None = None) -> str:
    """A new account; returns its TOTP secret."""
    with app.extensions["hq_store"].use() as db, db.transaction() as tx:
        uri = accounts.add(tx, username, PASSWORD, role, agency)
    return str(pyotp.parse_uri(uri).secret)


def csrf(client: FlaskClient, path: str = "/login") -> str:
    """The session's CSRF token, from a page's form."""
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found, path
    return found.group(1)


def sign_in(client: FlaskClient, username: str, code: str,
            password: str = PASSWORD) -> tuple[int, str]:
    """POST the sign-in form; status and body (after following a redirect)."""
    response = client.post("/login", data={"csrf_token": csrf(client), "username": username,
                                           "password": password, "code": code},
                           follow_redirects=True)
    return response.status_code, response.get_data(as_text=True)


def action_rows(app: Flask) -> list[dict[str, object]]:
    """The audit of console actions, newest first."""
    with app.extensions["hq_store"].use() as db:
        return actions.recent(db)


def test_sign_in_with_password_and_totp(app: Flask) -> None:
    secret = add_account(app, "amina", "monitoring_officer")
    client = app.test_client()
    status, body = sign_in(client, "amina", pyotp.TOTP(secret).now())
    assert status == 200 and "amina" in body and 'href="/fleet/"' in body
    cookie = client.get_cookie(security.SESSION_COOKIE)
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"
    assert not cookie.secure  # served on loopback; any other host gets Secure
    assert client.get("/fleet/").status_code == 200
    assert action_rows(app)[0]["action"] == "view_fleet"
    assert action_rows(app)[1]["action"] == "sign_in" and action_rows(app)[1]["outcome"] == "ok"


def test_wrong_and_replayed_codes_are_refused(app: Flask) -> None:
    secret = add_account(app, "amina", "monitoring_officer")
    client = app.test_client()
    code = pyotp.TOTP(secret).now()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert sign_in(client, "amina", wrong)[0] == 401
    assert sign_in(client, "amina", code, password="wrong password!")[0] == 401
    assert sign_in(client, "amina", code)[0] == 200
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    assert client.get("/fleet/").status_code == 302  # signed out
    status, body = sign_in(client, "amina", code)  # the same code again: a replay
    assert status == 401 and "wrong" in body
    outcomes = [r["outcome"] for r in action_rows(app) if r["action"] == "sign_in"]
    assert outcomes == ["replayed_code", "ok", "bad_password", "bad_code"]
    assert any(r["action"] == "sign_out" for r in action_rows(app))


def test_account_locks_after_five_failures(app: Flask) -> None:
    secret = add_account(app, "amina", "monitoring_officer")
    client = app.test_client()
    for _ in range(accounts.MAX_FAILURES):
        assert sign_in(client, "amina", "000000", password="not the password")[0] == 401
    status, body = sign_in(client, "amina", pyotp.TOTP(secret).now())
    assert status == 401 and "locked" in body
    with app.extensions["hq_store"].use() as db:
        assert accounts.listing(db)[0]["locked_until"] is not None


def test_client_throttled_after_many_failures(sqlite_app: Flask) -> None:
    secret = add_account(sqlite_app, "amina", "monitoring_officer")
    client = sqlite_app.test_client()
    for n in range(security.THROTTLE_ATTEMPTS):
        assert sign_in(client, f"nobody{n}", "123456")[0] == 401
    assert sign_in(client, "amina", pyotp.TOTP(secret).now())[0] == 429
    assert action_rows(sqlite_app)[0]["outcome"] == "throttled"
    with sqlite_app.extensions["hq_store"].use() as db:
        assert accounts.listing(db)[0]["failed_count"] == 0  # the password was never checked


def test_post_without_csrf_is_refused(sqlite_app: Flask) -> None:
    secret = add_account(sqlite_app, "amina", "monitoring_officer")
    client = sqlite_app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "amina", "password": PASSWORD,
                                           "code": pyotp.TOTP(secret).now()})
    assert response.status_code == 400
    assert client.get("/fleet/").status_code == 302
    assert action_rows(sqlite_app) == []  # nothing was even tried


def signed_in(app: Flask, role: str) -> FlaskClient:
    """A client signed in with a new account of `role`."""
    agency = "NADRA" if role == "agency_officer" else None
    username = role.replace("_", "-")
    secret = add_account(app, username, role, agency)
    client = app.test_client()
    assert sign_in(client, username, pyotp.TOTP(secret).now())[0] == 200
    return client


def test_every_route_checks_roles(sqlite_app: Flask) -> None:
    """Table-driven over the URL map: a new view without `screen(...)` fails here."""
    guarded = {}
    for rule in sqlite_app.url_map.iter_rules():
        if rule.endpoint in security.PUBLIC or rule.rule.startswith("/api/"):
            continue  # the API checks bearer tokens: tests/test_hq_api.py
        view = sqlite_app.view_functions[rule.endpoint]
        assert hasattr(view, "roles"), f"{rule.rule} has no role check"
        guarded[rule.rule] = (view.roles, "GET" in (rule.methods or ()))
    assert not guarded["/backoffice/decide"][1]  # a form target is in the table too
    anonymous = sqlite_app.test_client()
    for role in accounts.ROLES:
        client = signed_in(sqlite_app, role)
        token = csrf(client, "/")
        for path, (roles, readable) in guarded.items():
            if readable:
                assert anonymous.get(path).status_code == 302, path
                expected = (404 if "<" in path else 200) if role in roles else 403
                assert client.get(path).status_code == expected, (role, path)
                continue
            # an action (POST only): no session → sign in; an empty form from an allowed
            # role is refused with a message (never a 500), anyone else gets 403
            assert anonymous.post(path, data={"csrf_token": csrf(anonymous)}
                                  ).status_code in (302, 400), path
            status = client.post(path, data={"csrf_token": token}).status_code
            assert (status != 403) == (role in roles) and status < 500, (role, path, status)


def test_auditor_cannot_post_anything(sqlite_app: Flask) -> None:
    auditor = signed_in(sqlite_app, "auditor")
    token = csrf(auditor, "/")
    for rule in sqlite_app.url_map.iter_rules():
        if rule.endpoint in security.PUBLIC:
            continue
        assert auditor.post(rule.rule, data={"csrf_token": token}).status_code == 403, rule
    assert auditor.get("/actions/").status_code == 200
    assert auditor.post("/logout", data={"csrf_token": token}).status_code == 302


def test_idle_session_ends(sqlite_app: Flask) -> None:
    client = signed_in(sqlite_app, "admin")
    with client.session_transaction() as sess:
        sess["last"] -= security.IDLE_SECONDS + 1
    assert client.get("/fleet/").status_code == 302
    assert "inactivity" in client.get("/login").get_data(as_text=True)


def test_security_headers_and_urdu(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    response = client.get("/login?lang=ur")
    body = response.get_data(as_text=True)
    assert 'dir="rtl"' in body and 'lang="ur"' in body
    assert "سائن ان" in body  # the Urdu catalog is used
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert 'dir="ltr"' in client.get("/login?lang=en").get_data(as_text=True)


def test_demo_fills_a_fresh_store_once(tmp_path: Path) -> None:
    url = str(tmp_path / "hq" / "hq.db")
    db = HQDatabase(url)
    made = demo.fill(db)
    assert made is not None and {role for _, role, _, _ in made} == set(accounts.ROLES)
    assert demo.fill(db) is None  # never twice, never over a real HQ
    assert db.execute("SELECT count(*) FROM hq_applications").fetchone()[0] > 0
    db.close()
    app = create_app(url, test_config={"TESTING": True})
    user, _, password, secret = next(m for m in made if m[1] == "monitoring_officer")
    client = app.test_client()
    assert sign_in(client, user, pyotp.TOTP(secret).now(), password)[0] == 200
    page = client.get("/fleet/").get_data(as_text=True)
    assert all(node in page for node, *_ in demo.NODES)
    app.extensions["hq_store"].db.close()


def test_account_cli_add_and_list(tmp_path: Path) -> None:
    db = str(tmp_path / "hq" / "hq.db")
    runner = CliRunner()
    added = runner.invoke(hq_cli, ["--db", db, "account", "add", "amina", "--role", "auditor",
                                   "--password", PASSWORD])
    assert added.exit_code == 0, added.output
    assert "otpauth://totp/" in added.output and "secret:" in added.output
    refused = runner.invoke(hq_cli, ["--db", db, "account", "add", "bilal", "--role",
                                     "agency_officer", "--password", PASSWORD])
    assert refused.exit_code == 1 and "--agency" in refused.output
    listed = runner.invoke(hq_cli, ["--db", db, "account", "list"])
    assert "username=amina" in listed.output and "bilal" not in listed.output
    assert "secret" not in listed.output and "hash" not in listed.output
