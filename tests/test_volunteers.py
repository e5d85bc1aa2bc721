"""Volunteers: roster with encrypted phone, shifts, check-in/out, assists and hours."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge_node.config import Settings
from edge_node.domain import volunteer_shifts
from edge_node.node import Node
from tests.helpers import FakeClock, Headers, assert_error, ok, outbox_mark

Login = Callable[[str], Headers]
PHONE, PHONE_E164 = "0333-7654321", "+923337654321"
DAY = "2026-03-02"  # the FakeClock's business day (10:00 in Islamabad)
TOMORROW = "2026-03-03"


@pytest.fixture
def node(settings: Settings, clock: FakeClock) -> Iterator[Node]:
    """The demo node on the fake clock, with sessions that outlast a shift."""
    opened = Node({**settings, "session_idle_minutes": 24 * 60}, now=clock)
    yield opened
    opened.close()


def add(client: FlaskClient, headers: Headers, **fields: Any) -> Any:
    """POST /api/volunteers with a default volunteer."""
    body = {"name": "Hamza Yousaf", "phone": PHONE, "skills": ["urdu", "pashto"], **fields}
    return client.post("/api/volunteers", json=body, headers=headers)


def plan(client: FlaskClient, headers: Headers, volunteer_id: str, **fields: Any) -> Any:
    """POST a shift (default 09:00-13:00 today at the reception desk)."""
    body = {"business_date": DAY, "planned_start": "09:00", "planned_end": "13:00",
            "assignment": "reception desk", **fields}
    return client.post(f"/api/volunteers/{volunteer_id}/shifts", json=body, headers=headers)


def shift_action(client: FlaskClient, headers: Headers, shift_id: str, action: str,
                 body: dict[str, Any] | None = None) -> Any:
    """POST check-in, check-out or assists."""
    return client.post(f"/api/volunteer-shifts/{shift_id}/{action}", json=body, headers=headers)


@pytest.fixture
def volunteer(client: FlaskClient, login: Login) -> dict[str, Any]:
    """One volunteer on the roster."""
    body: dict[str, Any] = ok(add(client, login("supervisor")), 201)
    return body


@pytest.fixture
def shift(client: FlaskClient, login: Login, volunteer: dict[str, Any]) -> dict[str, Any]:
    """Today's 09:00-13:00 shift of `volunteer`."""
    body: dict[str, Any] = ok(plan(client, login("supervisor"), volunteer["id"]), 201)
    return body


# --- roster ----------------------------------------------------------------------------------

def test_add_volunteer(volunteer: dict[str, Any]) -> None:
    """Phone normalised; skills sorted and deduplicated; active."""
    assert volunteer["phone"] == PHONE_E164 and volunteer["skills"] == ["pashto", "urdu"]
    assert volunteer["active"] is True and volunteer["name"] == "Hamza Yousaf"


def test_phone_is_encrypted_everywhere(node: Node, volunteer: dict[str, Any]) -> None:
    """Stored row, outbox and audit hold no plaintext phone."""
    db = node.reader()
    [row] = db.query("SELECT * FROM volunteers")
    assert row["phone_enc"].startswith("v1:")
    texts = [json.dumps(row)]
    texts += [r[0] or "" for r in db.execute("SELECT data FROM sync_outbox").fetchall()]
    texts += [json.dumps(r) for r in db.query("SELECT * FROM audit_log")]
    for text in texts:
        assert "7654321" not in text


def test_roster_list_get_and_patch(client: FlaskClient, login: Login,
                                   volunteer: dict[str, Any]) -> None:
    """Supervisors read and edit the roster; inactive ones drop out of ?active=true."""
    supervisor = login("supervisor")
    other = ok(add(client, supervisor, name="Amna Bibi", phone=None, skills=[]), 201)
    assert [v["name"] for v in ok(client.get("/api/volunteers", headers=supervisor))] == [
        "Amna Bibi", "Hamza Yousaf"]
    changed = ok(client.patch(f"/api/volunteers/{other['id']}", headers=supervisor,
                              json={"active": False, "phone": "+923001112223",
                                    "skills": ["sign_language"]}))
    assert changed["active"] is False and changed["phone"] == "+923001112223"
    assert changed["skills"] == ["sign_language"] and changed["name"] == "Amna Bibi"
    active = ok(client.get("/api/volunteers?active=true", headers=supervisor))
    assert [v["id"] for v in active] == [volunteer["id"]]
    assert ok(client.get(f"/api/volunteers/{other['id']}", headers=supervisor)) == changed


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"phone": "051-2345678"}, "phone: must be a Pakistani mobile number"),
    ({"phone": 3337654321}, "phone: expected string, got integer"),
    ({"name": "  "}, "name: must be 1-100 characters"),
    ({"name": None}, "name: is required"),
    ({"skills": ["Urdu Speaker"]}, "skills: each skill is a code"),
    ({"skills": "urdu"}, "skills: expected array, got string"),
    ({"skills": ["a"] * 21}, "skills: must be at most 20 items"),
    ({"role": "volunteer"}, "role: unknown field"),
])
def test_add_validation(client: FlaskClient, login: Login, node: Node, fields: dict[str, Any],
                        fragment: str) -> None:
    """Bad roster entries are 400s that write nothing and never echo the phone."""
    headers = login("supervisor")
    before = outbox_mark(node)
    body = assert_error(add(client, headers, **fields), 400, fragment)
    assert "2345678" not in json.dumps(body)
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({}, 400, "nothing to change"),
    ({"active": "no"}, 400, "active: expected boolean, got string"),
    ({"phone": "12"}, 400, "phone: must be a Pakistani mobile number"),
    ({"id": "x"}, 400, "id: unknown field"),
])
def test_patch_validation(client: FlaskClient, login: Login, node: Node,
                          volunteer: dict[str, Any], body: dict[str, Any], status: int,
                          fragment: str) -> None:
    """Bad edits change nothing."""
    headers = login("supervisor")
    before = outbox_mark(node)
    assert_error(client.patch(f"/api/volunteers/{volunteer['id']}", json=body, headers=headers),
                 status, fragment)
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("user", "method", "path"), [
    ("volunteer", "post", "/api/volunteers"),
    ("reception", "post", "/api/volunteers"),
    ("operator", "get", "/api/volunteers"),
    ("volunteer", "get", "/api/volunteers"),
    ("kiosk", "get", "/api/volunteers/hours?from=2026-03-01&to=2026-03-02"),
])
def test_roster_is_for_supervisors(client: FlaskClient, login: Login, node: Node, user: str,
                                   method: str, path: str) -> None:
    """Only supervisors and managers see phones or manage the roster."""
    headers = login(user)
    before = outbox_mark(node)
    resp = getattr(client, method)(path, json={"name": "X"} if method == "post" else None,
                                   headers=headers)
    assert_error(resp, 403, "may not do this")
    assert outbox_mark(node) == before


def test_unknown_volunteer(client: FlaskClient, login: Login, node: Node) -> None:
    """404 on read, edit and planning."""
    headers = login("supervisor")
    before = outbox_mark(node)
    assert_error(client.get("/api/volunteers/nope", headers=headers), 404, "unknown volunteer")
    assert_error(client.patch("/api/volunteers/nope", json={"name": "X"}, headers=headers), 404)
    assert_error(plan(client, headers, "nope"), 404, "unknown volunteer")
    assert outbox_mark(node) == before


# --- shifts ----------------------------------------------------------------------------------

def test_plan_and_list(client: FlaskClient, login: Login, shift: dict[str, Any]) -> None:
    """A planned shift shows on its day's list, for supervisors and the volunteer desk."""
    assert shift["volunteer_name"] == "Hamza Yousaf" and shift["assists"] == 0
    assert shift["checked_in_at"] is None and shift["business_date"] == DAY
    for user in ("supervisor", "volunteer"):
        assert ok(client.get("/api/volunteer-shifts", headers=login(user))) == [shift]
    assert ok(client.get(f"/api/volunteer-shifts?date={TOMORROW}",
                         headers=login("volunteer"))) == []


@pytest.mark.parametrize(("fields", "status", "fragment"), [
    ({"planned_end": "08:00"}, 400, "planned_end: must be after planned_start"),
    ({"planned_end": "09:00"}, 400, "planned_end: must be after planned_start"),
    ({"planned_start": "25:00"}, 400, "planned_start: must be a time written HH:MM"),
    ({"planned_start": "9:00"}, 400, "planned_start: has the wrong format"),
    ({"business_date": "2026-02-30"}, 400, "business_date: must be a date written YYYY-MM-DD"),
    ({"business_date": "02/03/2026"}, 400, "business_date: has the wrong format"),
    ({"assignment": ""}, 400, "assignment: must be at least 1 characters"),
    ({"checked_in_at": "now"}, 400, "checked_in_at: unknown field"),
    ({"planned_start": "12:00", "planned_end": "15:00"}, 409, "overlapping 12:00-15:00"),
    ({"planned_start": "08:00", "planned_end": "09:30"}, 409, "overlapping"),
])
def test_plan_validation(client: FlaskClient, login: Login, node: Node,
                         shift: dict[str, Any], fields: dict[str, Any], status: int,
                         fragment: str) -> None:
    """Bad times and overlapping shifts are refused; nothing is written."""
    headers = login("supervisor")
    before = outbox_mark(node)
    assert_error(plan(client, headers, shift["volunteer_id"], **fields), status, fragment)
    assert outbox_mark(node) == before


def test_back_to_back_shifts_are_fine(client: FlaskClient, login: Login,
                                      shift: dict[str, Any]) -> None:
    """13:00-17:00 after 09:00-13:00 does not overlap."""
    ok(plan(client, login("supervisor"), shift["volunteer_id"], planned_start="13:00",
            planned_end="17:00"), 201)


def test_inactive_volunteer_gets_no_shift(client: FlaskClient, login: Login, node: Node,
                                          volunteer: dict[str, Any]) -> None:
    """Deactivated volunteers cannot be planned: 409."""
    headers = login("supervisor")
    ok(client.patch(f"/api/volunteers/{volunteer['id']}", json={"active": False},
                    headers=headers))
    before = outbox_mark(node)
    assert_error(plan(client, headers, volunteer["id"]), 409, "inactive")
    assert outbox_mark(node) == before


def test_check_in_out_and_hours(client: FlaskClient, login: Login, clock: FakeClock,
                                shift: dict[str, Any]) -> None:
    """The volunteer checks in, helps, checks out 3.5 hours later; the report adds it up."""
    desk = login("volunteer")
    started = ok(shift_action(client, desk, shift["id"], "check-in"))
    assert started["checked_in_at"] is not None
    ok(shift_action(client, desk, shift["id"], "assists"))
    helped = ok(shift_action(client, desk, shift["id"], "assists", {"count": 3}))
    assert helped["assists"] == 4
    clock.advance(hours=3, minutes=30)
    ended = ok(shift_action(client, desk, shift["id"], "check-out"))
    assert ended["checked_out_at"] > ended["checked_in_at"]
    report = ok(client.get(f"/api/volunteers/hours?from={DAY}&to={DAY}",
                           headers=login("supervisor")))
    assert report == [{"volunteer_id": shift["volunteer_id"], "name": "Hamza Yousaf",
                       "shifts": 1, "attended": 1, "planned_hours": 4.0, "worked_hours": 3.5,
                       "assists": 4}]


def test_hours_over_a_range(client: FlaskClient, login: Login, clock: FakeClock,
                            shift: dict[str, Any]) -> None:
    """Unattended and unfinished shifts count as planned, not worked; out-of-range are left out."""
    supervisor = login("supervisor")
    ok(plan(client, supervisor, shift["volunteer_id"], business_date=TOMORROW,
            planned_start="14:00", planned_end="16:30"), 201)
    ok(plan(client, supervisor, shift["volunteer_id"], business_date="2026-03-09"), 201)
    ok(shift_action(client, supervisor, shift["id"], "check-in"))
    clock.advance(hours=1)
    [row] = ok(client.get(f"/api/volunteers/hours?from={DAY}&to={TOMORROW}",
                          headers=supervisor))
    assert (row["shifts"], row["attended"], row["planned_hours"], row["worked_hours"]) == (
        2, 1, 6.5, 0.0)
    assert ok(client.get("/api/volunteers/hours?from=2026-01-01&to=2026-01-31",
                         headers=supervisor)) == []


@pytest.mark.parametrize(("steps", "action", "fragment"), [
    ([], "check-out", "not checked in; check in before checking out"),
    (["check-in"], "check-in", "checked in already"),
    (["check-in", "check-out"], "check-out", "checked out already"),
    (["check-in", "check-out"], "check-in", "checked in already"),
    ([], "assists", "only while the shift is checked in"),
    (["check-in", "check-out"], "assists", "only while the shift is checked in"),
])
def test_shift_conflicts(client: FlaskClient, login: Login, node: Node, clock: FakeClock,
                         shift: dict[str, Any], steps: list[str], action: str,
                         fragment: str) -> None:
    """Out-of-order or repeated actions are 409s that change nothing."""
    desk = login("volunteer")
    for step in steps:
        ok(shift_action(client, desk, shift["id"], step))
        clock.advance(minutes=5)
    before = outbox_mark(node)
    assert_error(shift_action(client, desk, shift["id"], action), 409, fragment)
    assert outbox_mark(node) == before


def test_check_in_only_on_the_day(client: FlaskClient, login: Login, node: Node,
                                  volunteer: dict[str, Any]) -> None:
    """Tomorrow's shift cannot be started today."""
    later = ok(plan(client, login("supervisor"), volunteer["id"], business_date=TOMORROW), 201)
    desk = login("volunteer")
    before = outbox_mark(node)
    assert_error(shift_action(client, desk, later["id"], "check-in"), 409,
                 f"this shift is on {TOMORROW}")
    assert outbox_mark(node) == before


def test_check_out_before_check_in_time_is_refused(client: FlaskClient, login: Login,
                                                   node: Node, clock: FakeClock,
                                                   shift: dict[str, Any]) -> None:
    """A clock set back between check-in and check-out cannot make negative hours."""
    desk = login("volunteer")
    ok(shift_action(client, desk, shift["id"], "check-in"))
    clock.advance(minutes=-20)
    before = outbox_mark(node)
    assert_error(shift_action(client, desk, shift["id"], "check-out"), 409,
                 "before the check-in time")
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("body", "fragment"), [
    ({"count": 0}, "count: must be at least 1"),
    ({"count": 51}, "count: must be at most 50"),
    ({"count": "2"}, "count: expected integer, got string"),
    ({"count": 1.5}, "count: expected integer, got number"),
    ({"who": "me"}, "who: unknown field"),
])
def test_assists_validation(client: FlaskClient, login: Login, node: Node,
                            shift: dict[str, Any], body: dict[str, Any], fragment: str) -> None:
    """The assists increment is a small positive whole number."""
    desk = login("volunteer")
    ok(shift_action(client, desk, shift["id"], "check-in"))
    before = outbox_mark(node)
    assert_error(shift_action(client, desk, shift["id"], "assists", body), 400, fragment)
    assert outbox_mark(node) == before


@pytest.mark.parametrize("user", ["kiosk", "reception", "operator", "display"])
def test_who_may_not_check_in(client: FlaskClient, login: Login, node: Node,
                              shift: dict[str, Any], user: str) -> None:
    """Check-in, check-out and assists are for the volunteer desk and supervisors."""
    headers = login(user)
    before = outbox_mark(node)
    for action in ("check-in", "check-out", "assists"):
        assert_error(shift_action(client, headers, shift["id"], action), 403)
    assert_error(plan(client, headers, shift["volunteer_id"]), 403)
    assert outbox_mark(node) == before


def test_unknown_shift(client: FlaskClient, login: Login, node: Node) -> None:
    """404 for every action on a missing shift."""
    desk = login("volunteer")
    before = outbox_mark(node)
    for action in ("check-in", "check-out", "assists"):
        assert_error(shift_action(client, desk, "nope", action), 404, "unknown shift: nope")
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("query", "fragment"), [
    ("from=2026-03-05&to=2026-03-01", "to: must not be before from"),
    ("from=2025-01-01&to=2026-03-01", "at most 366 days"),
    ("from=2026-02-30&to=2026-03-01", "from: must be a date written YYYY-MM-DD"),
    ("to=2026-03-01", "from: is required"),
    ("from=2026-03-01&to=tomorrow", "to: has the wrong format"),
])
def test_hours_report_validation(client: FlaskClient, login: Login, query: str,
                                 fragment: str) -> None:
    """The date range is checked and bounded."""
    assert_error(client.get(f"/api/volunteers/hours?{query}", headers=login("supervisor")), 400,
                 fragment)


def test_shift_list_rejects_impossible_date(client: FlaskClient, login: Login) -> None:
    """A well-shaped but impossible date is a 400 too."""
    assert_error(client.get("/api/volunteer-shifts?date=2026-13-01", headers=login("volunteer")),
                 400, "date: must be a date written YYYY-MM-DD")


def test_audit_entries_hold_ids(client: FlaskClient, login: Login, node: Node,
                                shift: dict[str, Any]) -> None:
    """Each staff action on the roster and shifts is audited by id, without names or phones."""
    ok(shift_action(client, login("volunteer"), shift["id"], "check-in"))
    rows = list(node.reader().query("SELECT action, entity_id, detail FROM audit_log "
                                    "WHERE action LIKE 'volunteer.%' OR action LIKE 'shift.%' "
                                    "ORDER BY seq"))
    assert [r["action"] for r in rows] == ["volunteer.add", "shift.plan", "shift.check_in"]
    assert rows[1]["entity_id"] == shift["id"]
    assert all("Hamza" not in json.dumps(r) for r in rows)


def test_minutes_helper() -> None:
    """HH:MM to minutes after midnight."""
    assert volunteer_shifts.minutes("00:00", "t") == 0
    assert volunteer_shifts.minutes("23:59", "t") == 23 * 60 + 59
