"""HQ console center staff (issue 11 item 5): create an account with a node role, reset its
password, disable it — each published downstream to the center's nodes with a higher
version; the one-time password is shown once, only its Argon2id hash is kept or sent."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from flask import Flask
from flask.testing import FlaskClient

from hq.console.app import create_app
from hq.store import utc_now
from tests.test_hq_console import action_rows, csrf, signed_in

PAGE = "/staff/"
SHOWN = re.compile(r'id="one-time-password">([^<]+)<')


@pytest.fixture
def staff_app(tmp_path: Path) -> Iterator[Flask]:
    """The console over a fresh store with two nodes at ISB-01 (one revoked) and one at LHR-01."""
    console = create_app(str(tmp_path / "hq.db"), test_config={"TESTING": True})
    with console.extensions["hq_store"].use() as db, db.transaction() as tx:
        for node, center, revoked in (("N1", "ISB-01", 0), ("N2", "ISB-01", 0),
                                      ("N3", "ISB-01", 1), ("N4", "LHR-01", 0)):
            tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, revoked, "
                       "enrolled_at) VALUES (?, ?, 'pem', ?, ?)", [node, center, revoked,
                                                                   utc_now()])
    yield console
    console.extensions["hq_store"].db.close()


def staff_items(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    """(node, account) of every queued `staff` item, in queue order."""
    with app.extensions["hq_store"].use() as db:
        rows = db.execute("SELECT node_id, payload FROM hq_down WHERE kind = 'staff' "
                          "ORDER BY created_at, node_id, seq").fetchall()
    return [(r[0], acc) for r in rows for acc in json.loads(r[1])["accounts"]]


def create(client: FlaskClient, username: str = "amina", **extra: str) -> Any:
    """POST the create form."""
    data = {"csrf_token": csrf(client, PAGE), "center_id": "ISB-01", "username": username,
            "full_name": "Amina Khan", "role": "receptionist", "language": "ur", **extra}
    return client.post(f"{PAGE}create", data=data)


def shown_password(response: Any) -> str:
    """The one-time password on the result page."""
    found = SHOWN.search(response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)
    return found.group(1)


def test_create_reset_disable_publish_to_the_centers_nodes(
        staff_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = signed_in(staff_app, "fleet_admin")
    response = create(admin)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    first = shown_password(response)
    items = staff_items(staff_app)
    assert [node for node, _ in items] == ["N1", "N2"]  # not revoked N3, not LHR-01's N4
    account = items[0][1]
    assert account == items[1][1]
    assert set(account) == {"id", "username", "full_name", "role", "password_hash", "active",
                            "language", "version"}
    assert (account["username"], account["role"], account["active"], account["version"],
            account["language"]) == ("amina", "receptionist", 1, 1, "ur")
    assert extract_parameters(account["password_hash"]).type is Type.ID
    assert PasswordHasher().verify(account["password_hash"], first)

    response = admin.post(f"{PAGE}reset", data={"csrf_token": csrf(admin, PAGE),
                                                "staff_id": account["id"]})
    second = shown_password(response)
    assert second != first
    reset = staff_items(staff_app)[2][1]
    assert reset["version"] == 2 and reset["password_hash"] != account["password_hash"]
    assert PasswordHasher().verify(reset["password_hash"], second)

    response = admin.post(f"{PAGE}disable", data={"csrf_token": csrf(admin, PAGE),
                                                  "staff_id": account["id"]})
    assert response.status_code == 200
    disabled = staff_items(staff_app)[-1][1]
    assert (disabled["active"], disabled["version"]) == (0, 3)
    assert disabled["password_hash"] == reset["password_hash"]
    assert len(staff_items(staff_app)) == 6
    page = admin.get(PAGE).get_data(as_text=True)
    assert "amina" in page and first not in page and second not in page

    done = [(r["action"], r["outcome"]) for r in action_rows(staff_app)]
    for action in ("create_center_staff", "reset_center_staff_password",
                   "disable_center_staff"):
        assert (action, "ok") in done
    for password in (first, second):
        assert all(password not in str(row) for row in action_rows(staff_app))
        assert password not in caplog.text
        with staff_app.extensions["hq_store"].use() as db:
            assert not db.execute("SELECT 1 FROM hq_center_staff WHERE password_hash = ?",
                                  [password]).fetchone()


def test_bad_requests_change_nothing(staff_app: Flask) -> None:
    admin = signed_in(staff_app, "admin")
    assert create(admin).status_code == 200
    before = staff_items(staff_app)
    for extra in ({"username": "amina"}, {"role": "volunteer_coordinator"},
                  {"username": "Bad Name"}, {"full_name": ""}, {"center_id": "KHI-09"}):
        response = create(admin, **extra)
        assert response.status_code == 400, extra
        assert 'id="staff-error"' in response.get_data(as_text=True)
    response = admin.post(f"{PAGE}reset", data={"csrf_token": csrf(admin, PAGE),
                                                "staff_id": "nope"})
    assert response.status_code == 400
    assert staff_items(staff_app) == before
    assert ("create_center_staff", "refused") in [(r["action"], r["outcome"])
                                                   for r in action_rows(staff_app)]


def test_auditor_reads_but_cannot_act(staff_app: Flask) -> None:
    admin = signed_in(staff_app, "admin")
    create(admin)
    staff_id = staff_items(staff_app)[0][1]["id"]
    auditor = signed_in(staff_app, "auditor")
    page = auditor.get(PAGE)
    assert page.status_code == 200 and "amina" in page.get_data(as_text=True)
    assert 'id="create-form"' not in page.get_data(as_text=True)
    token = csrf(auditor, PAGE)
    for path in ("create", "reset", "disable"):
        assert auditor.post(f"{PAGE}{path}", data={"csrf_token": token,
                                                   "staff_id": staff_id}).status_code == 403
    assert len(staff_items(staff_app)) == 2
    officer = signed_in(staff_app, "monitoring_officer")
    assert officer.get(PAGE).status_code == 403


def test_urdu_page(staff_app: Flask) -> None:
    admin = signed_in(staff_app, "admin")
    text = admin.get(f"{PAGE}?lang=ur").get_data(as_text=True)
    assert "عملہ" in text
