"""Offline staff login: Argon2id hashes, lockout, idle logout, logout, `edge-node staff add`."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from argon2 import Type, extract_parameters
from click.testing import CliRunner
from flask.testing import FlaskClient

from edge_node import login_throttle
from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX, DEMO_STAFF
from edge_node.cli.main import main
from edge_node.config import Settings
from edge_node.node import Node
from tests.helpers import FakeClock, Headers, assert_error, log_in, ok

WRONG = "definitely-not-it"


@pytest.fixture
def node(clocked_node: Node) -> Node:
    """The demo node on the fake clock (overrides conftest's `node`)."""
    return clocked_node


def attempt(client: FlaskClient, user: str, password: str, address: str = "127.0.0.1") -> Any:
    """POST a login from the client `address`."""
    return client.post("/api/auth/login", json={"username": user, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def me(client: FlaskClient, headers: Headers) -> Any:
    """GET /api/auth/me."""
    return client.get("/api/auth/me", headers=headers)


def test_login_ok(client: FlaskClient) -> None:
    """The right password gives a token and the staff member, without the hash."""
    body = ok(attempt(client, "operator", "operator" + DEMO_PASSWORD_SUFFIX))
    assert body["staff"]["username"] == "operator" and body["staff"]["role"] == "operator"
    assert "password_hash" not in body["staff"]
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert ok(me(client, headers))["id"] == body["staff"]["id"]


@pytest.mark.parametrize(("user", "password"), [
    ("operator", WRONG),
    ("nobody", WRONG),
    ("nobody", "operator" + DEMO_PASSWORD_SUFFIX),
    ("Operator", "operator" + DEMO_PASSWORD_SUFFIX),
])
def test_login_refusals_look_alike(client: FlaskClient, user: str, password: str) -> None:
    """Wrong password and unknown user get the very same 401: no username probing."""
    body = assert_error(attempt(client, user, password), 401)
    assert body["error"] == "wrong username or password"


@pytest.mark.parametrize(("payload", "fragment"), [
    ({}, "username: is required"),
    ({"username": "operator"}, "password: is required"),
    ({"username": "", "password": "x"}, "username: must be at least 1"),
    ({"username": "operator", "password": 12345}, "password: expected string"),
])
def test_login_validation(client: FlaskClient, payload: dict[str, Any], fragment: str) -> None:
    """A malformed login is a 400 naming the field."""
    assert_error(client.post("/api/auth/login", json=payload), 400, fragment)


def test_lockout_and_unlock(client: FlaskClient, node: Node, clock: FakeClock) -> None:
    """After login_max_failures the account is locked, even to the right password, for a while."""
    right = "operator" + DEMO_PASSWORD_SUFFIX
    for _ in range(node.settings["login_max_failures"]):
        assert_error(attempt(client, "operator", WRONG), 401, "wrong username or password")
    assert_error(attempt(client, "operator", right), 423, "account locked")
    assert_error(attempt(client, "operator", WRONG), 423, "account locked")
    clock.advance(minutes=node.settings["lockout_minutes"], seconds=-1)
    assert_error(attempt(client, "operator", right), 423, "account locked")
    clock.advance(seconds=2)
    ok(attempt(client, "operator", right))
    ok(attempt(client, "supervisor", "supervisor" + DEMO_PASSWORD_SUFFIX))  # others unaffected


def test_success_resets_the_failure_count(client: FlaskClient, node: Node) -> None:
    """Failures must be in a row: a good login in between starts the count again."""
    right = "operator" + DEMO_PASSWORD_SUFFIX
    for _ in range(2):
        for _ in range(node.settings["login_max_failures"] - 1):
            assert_error(attempt(client, "operator", WRONG), 401)
        ok(attempt(client, "operator", right))


def test_unlocked_account_gets_a_fresh_count(client: FlaskClient, node: Node,
                                             clock: FakeClock) -> None:
    """After a lockout ends one more mistake does not lock the account again."""
    for _ in range(node.settings["login_max_failures"]):
        attempt(client, "operator", WRONG)
    clock.advance(minutes=node.settings["lockout_minutes"], seconds=1)
    assert_error(attempt(client, "operator", WRONG), 401)
    ok(attempt(client, "operator", "operator" + DEMO_PASSWORD_SUFFIX))


STRANGER, STAFF_PC = "10.0.0.66", "10.0.0.7"
ACCOUNTS = [user for user, _, _ in DEMO_STAFF]


def spray(client: FlaskClient, guesses: int) -> list[Any]:
    """The stranger tries one wrong password per account, round robin, without pausing."""
    return [attempt(client, ACCOUNTS[i % len(ACCOUNTS)], WRONG, STRANGER)
            for i in range(guesses)]


def test_one_client_guessing_across_accounts_is_throttled(client: FlaskClient,
                                                          clock: FakeClock) -> None:
    """Past its budget a client waits, doubling with each failure; no account got locked."""
    for resp in spray(client, login_throttle.FREE_FAILURES):
        assert_error(resp, 401, "wrong username or password")
    refused = attempt(client, "operator", WRONG, STRANGER)
    assert_error(refused, 429, "too many failed logins from this client")
    assert refused.headers["Retry-After"] == "1"
    for wait, user in zip((1, 2, 4, 8), ACCOUNTS[1:], strict=False):
        clock.advance(seconds=wait - 0.5)
        assert_error(attempt(client, user, WRONG, STRANGER), 429)
        clock.advance(seconds=0.5)
        assert_error(attempt(client, user, WRONG, STRANGER), 401)
    assert attempt(client, "auditor", WRONG, STRANGER).headers["Retry-After"] == "16"
    clock.advance(seconds=login_throttle.WINDOW_S)
    assert_error(attempt(client, "auditor", WRONG, STRANGER), 401)  # the window forgets


def test_a_throttled_attempt_checks_no_password(client: FlaskClient, node: Node) -> None:
    """Refused before the password: even the right one, and it counts toward no lockout."""
    spray(client, login_throttle.FREE_FAILURES)
    before = node.reader().execute("SELECT * FROM staff_login_state ORDER BY 1").fetchall()
    for _ in range(node.settings["login_max_failures"] + 1):
        assert_error(attempt(client, "operator", "operator" + DEMO_PASSWORD_SUFFIX, STRANGER),
                     429)
    after = node.reader().execute("SELECT * FROM staff_login_state ORDER BY 1").fetchall()
    assert after == before


def test_a_strangers_failures_do_not_lock_out_staff_elsewhere(client: FlaskClient) -> None:
    """While the stranger is throttled, staff on another client log in at once."""
    spray(client, login_throttle.FREE_FAILURES + 1)
    assert_error(attempt(client, "operator", WRONG, STRANGER), 429)
    for user in ACCOUNTS:
        ok(attempt(client, user, user + DEMO_PASSWORD_SUFFIX, STAFF_PC))


def test_idle_logout(client: FlaskClient, node: Node, clock: FakeClock) -> None:
    """Activity keeps a session alive; session_idle_minutes of silence ends it."""
    idle = node.settings["session_idle_minutes"]
    headers = log_in(client, "operator")
    for _ in range(3):
        clock.advance(minutes=idle - 1)
        ok(me(client, headers))
    clock.advance(minutes=idle, seconds=1)
    assert_error(me(client, headers), 401, "session ended after inactivity; log in again")
    ok(me(client, log_in(client, "operator")))


def test_logout_invalidates_the_token(client: FlaskClient) -> None:
    """A logged-out token is refused; the user's other sessions live on."""
    first, second = log_in(client, "operator"), log_in(client, "operator")
    assert ok(client.post("/api/auth/logout", headers=first)) == {"ok": True}
    assert_error(me(client, first), 401, "log in again")
    assert_error(client.post("/api/auth/logout", headers=first), 401)
    ok(me(client, second))


def test_password_hash_is_argon2id(node: Node) -> None:
    """Stored hashes are Argon2id with sane cost; no password is stored in the clear."""
    for row in node.reader().query("SELECT username, password_hash FROM staff"):
        params = extract_parameters(row["password_hash"])
        assert row["password_hash"].startswith("$argon2id$")
        assert params.type is Type.ID and params.memory_cost >= 19 * 1024
        assert row["username"] + DEMO_PASSWORD_SUFFIX not in row["password_hash"]


def test_only_token_hashes_are_stored(client: FlaskClient, node: Node) -> None:
    """The sessions table holds SHA-256 of the token, never the token itself."""
    token = log_in(client, "operator")["Authorization"].split()[1]
    stored = [r[0] for r in node.reader().execute("SELECT token_hash FROM sessions")]
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert token not in stored


# --- edge-node staff add ---------------------------------------------------------------------

def staff_add(settings: Settings, *args: str) -> Any:
    """Run `edge-node --data-dir <node> staff add ...`."""
    return CliRunner().invoke(main, ["--data-dir", settings["data_dir"], "staff", "add", *args])


def test_staff_add_then_login(settings: Settings, client: FlaskClient) -> None:
    """A CLI-created account can log in, with the role given."""
    result = staff_add(settings, "amina", "--name", "Amina Khan", "--role", "supervisor",
                       "--password", "a-long-password")
    assert result.exit_code == 0, result.output
    assert "created supervisor account amina" in result.output
    body = ok(attempt(client, "amina", "a-long-password"))
    assert (body["staff"]["role"], body["staff"]["full_name"]) == ("supervisor", "Amina Khan")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--role", "operator", "--password", "short"], "password: must be at least 10 characters"),
    (["--role", "wizard", "--password", "a-long-password"], "role: must be one of"),
    (["--role", "Operator", "--password", "a-long-password"], "role: must be one of"),
])
def test_staff_add_refusals(settings: Settings, node: Node, args: list[str],
                            fragment: str) -> None:
    """A short password or an unknown role is one clear line; no account is created."""
    result = staff_add(settings, "amina", "--name", "Amina Khan", *args)
    assert result.exit_code == 1
    assert fragment in result.output and "Traceback" not in result.output
    assert not node.reader().execute("SELECT 1 FROM staff WHERE username = 'amina'").fetchone()


def test_staff_add_refuses_a_taken_username(settings: Settings) -> None:
    """Usernames are unique."""
    result = staff_add(settings, "operator", "--name", "Someone Else", "--role", "operator",
                       "--password", "a-long-password")
    assert result.exit_code == 1
    assert "username already exists: operator" in result.output
