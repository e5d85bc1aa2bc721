"""Applications: references, checklist validation, the status lattice, roles and the API."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_node.domain import applications
from edge_node.errors import ConflictError, EdgeError
from edge_node.ids import new_id
from edge_node.node import Node
from sync import merge
from sync.hlc import Timestamp
from tests.helpers import (
    DGIP,
    NADRA,
    Headers,
    assert_error,
    call_next,
    decide,
    issue,
    ok,
    open_counter,
    outbox_mark,
)

Login = Callable[[str], Headers]
STATUSES = applications.STATUSES


def register_citizen(client: FlaskClient, headers: Headers, cnic: str = "35202-1234567-1"
                     ) -> str:
    """A registered citizen's id."""
    body = ok(client.post("/api/citizens", json={"cnic": cnic, "name": "Bilal Ahmed"},
                          headers=headers), 201)
    return str(body["id"])


@pytest.fixture
def at_counter(client: FlaskClient, login: Login) -> dict[str, Any]:
    """A citizen's ticket (NADRA renewal, then a passport) called to Counter 1."""
    reception, operator = login("reception"), login("operator")
    citizen_id = register_citizen(client, reception)
    ok(client.post("/api/visits", json={"services": [NADRA, DGIP], "citizen_id": citizen_id},
                   headers=reception), 201)
    counter = open_counter(client, operator)
    ticket = call_next(client, operator, counter)
    assert ticket is not None
    return {"ticket": ticket, "citizen_id": citizen_id, "counter_id": counter}


def create(client: FlaskClient, headers: Headers, **fields: Any) -> Any:
    """POST /api/applications."""
    return client.post("/api/applications", json=fields, headers=headers)


def new_application(client: FlaskClient, login: Login, at_counter: dict[str, Any],
                    service: str = NADRA) -> dict[str, Any]:
    """A submitted application for the called ticket."""
    body: dict[str, Any] = ok(create(
        client, login("operator"), ticket_id=at_counter["ticket"]["id"], service_code=service,
        fee_reference="PSID-1000234567", documents_seen=["cnic_original", "cnic_copy"]), 201)
    return body


def move(client: FlaskClient, headers: Headers, application_id: str, status: str,
         note: str | None = None) -> Any:
    """POST a status change."""
    body = {"status": status} if note is None else {"status": status, "note": note}
    return client.post(f"/api/applications/{application_id}/status", json=body, headers=headers)


# --- the lattice as pure functions ------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "allowed"), [
    ("submitted", "in_review", True), ("submitted", "ready", True),
    ("in_review", "ready", True), ("in_review", "rejected", True),
    ("ready", "collected", True), ("rejected", "collected", True),
    ("submitted", "submitted", False), ("ready", "rejected", False),
    ("rejected", "ready", False), ("ready", "in_review", False),
    ("collected", "ready", False), ("collected", "collected", False),
    ("in_review", "submitted", False),
])
def test_can_move(old: str, new: str, allowed: bool) -> None:
    """Only strictly upward moves; ready and rejected are one rank."""
    assert applications.can_move(old, new) is allowed


def test_domain_lattice_is_the_merge_lattice() -> None:
    """The node moves statuses along the very ranks HQ merges by: one definition, no copy."""
    policy = merge.policy_for("applications")
    assert policy.kind == "lattice" and policy.lattice_field == "status"
    assert policy.ranks is merge.APPLICATION_RANKS
    assert applications.STATUSES is merge.APPLICATION_STATUSES
    assert set(applications.STATUSES) == set(policy.ranks)
    assert all(applications.rank(s) == policy.ranks[s] for s in applications.STATUSES)


def test_rank_refuses_unknown_status() -> None:
    """An unknown status is a validation error, not a silent rank."""
    with pytest.raises(EdgeError, match="status: must be one of"):
        applications.rank("lost")


@given(st.lists(st.sampled_from(STATUSES), max_size=30))
def test_lattice_never_lowers_rank(attempts: list[str]) -> None:
    """Applying any sequence of attempts by `can_move`, rank only ever rises."""
    status = "submitted"
    for new in attempts:
        before = applications.rank(status)
        if applications.can_move(status, new):
            status = new
            assert applications.rank(status) > before
        assert applications.rank(status) >= before


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=8))
def test_stored_status_never_lowers_rank(node: Node, attempts: list[str]) -> None:
    """Driving the real domain functions with any attempts (center moves through set_status,
    back-office ones as decisions): refused moves change nothing."""
    actor = {"id": "s1", "role": "supervisor"}
    app_id = node.write(lambda db: _bare_application(db, node))
    for new in attempts:
        before = _stored_status(node, app_id)
        now = node.timestamp()
        step: Callable[[Any], Any]
        if new in applications.CENTER_STATUSES:
            step = functools.partial(applications.set_status, application_id=app_id,
                                     status=new, note=None, actor=actor, now=now)
        else:
            step = functools.partial(_decision, app_id=app_id, status=new, now=now)
        try:
            node.write(step)
        except ConflictError:
            assert _stored_status(node, app_id) == before
        else:
            after = _stored_status(node, app_id)
            assert applications.rank(after[0]) > applications.rank(before[0])
            assert after[1] > before[1]


def _decision(db: Any, app_id: str, status: str, now: str) -> None:
    """A back-office decision through the domain (writer); a no-op repeat counts as refused."""
    if not applications.apply_decision(db, applications.get_application(db, app_id), status,
                                       "why" if status == "rejected" else None, now):
        raise ConflictError("already decided")


def _stored_status(node: Node, app_id: str) -> tuple[str, str]:
    """(status, status_hlc) as stored."""
    row = node.reader().execute("SELECT status, status_hlc FROM applications WHERE id = ?",
                                [app_id]).fetchone()
    return row[0], row[1]


def _bare_application(db: Any, node: Node) -> str:
    """A submitted application without ticket, for a fresh citizen (writer)."""
    citizen_id = new_id()
    db.table("citizens").insert({"id": citizen_id, "cnic_index": citizen_id, "cnic_enc": "v1:",
                                 "name_enc": "v1:", "phone_enc": None, "id_kind": "cnic",
                                 "created_at": node.timestamp(), "updated_at": node.timestamp()})
    row = applications.create_application(
        db, {"service_code": NADRA, "ticket_id": None, "citizen_id": citizen_id,
             "agency_reference": None, "fee_reference": None, "documents_seen": None},
        actor={"id": "op", "role": "operator"}, now=node.timestamp(), day=node.today(),
        center_id=node.center_id, node_id=node.node_id)
    return str(row["id"])


# --- creating ------------------------------------------------------------------------------

def test_create_from_the_ticket(client: FlaskClient, login: Login, node: Node,
                                at_counter: dict[str, Any]) -> None:
    """Citizen comes from the ticket's visit; agency from the service; reference is ours."""
    body = new_application(client, login, at_counter)
    day = node.today().replace("-", "")
    assert body["reference"] == f"{node.center_id}-{node.node_id}-{day}-00001"
    assert body["citizen_id"] == at_counter["citizen_id"]
    assert (body["agency_code"], body["status"], body["service_code"]) == ("nadra", "submitted",
                                                                           NADRA)
    assert body["documents_seen"] == ["cnic_original", "cnic_copy"]
    assert body["fee_reference"] == "PSID-1000234567" and body["notes"] is None
    assert Timestamp.parse(body["status_hlc"]).node_id == node.node_id


def test_references_count_up_per_day(client: FlaskClient, login: Login, node: Node,
                                     at_counter: dict[str, Any]) -> None:
    """The sequence lives in reference_numbers (kind 'application')."""
    first = new_application(client, login, at_counter)
    second = new_application(client, login, at_counter, DGIP)
    assert first["reference"].endswith("-00001") and second["reference"].endswith("-00002")
    assert re.fullmatch(r"ISB-01-N[A-Z0-9]{5}-\d{8}-\d{5}", second["reference"])
    row = node.reader().execute("SELECT last_number FROM reference_numbers WHERE kind = "
                                "'application' AND business_date = ?", [node.today()]).fetchone()
    assert row[0] == 2


def test_create_without_ticket(client: FlaskClient, login: Login) -> None:
    """A citizen id alone is enough (e.g. an application taken over the phone)."""
    citizen_id = register_citizen(client, login("reception"))
    body = ok(create(client, login("supervisor"), service_code="fbr_ntn_registration",
                     citizen_id=citizen_id), 201)
    assert body["ticket_id"] is None and body["agency_code"] == "fbr"


def test_create_audits_ids_only(client: FlaskClient, login: Login, node: Node,
                                at_counter: dict[str, Any]) -> None:
    """The audit entry names the application, reference and service."""
    body = new_application(client, login, at_counter)
    [entry] = node.reader().query("SELECT * FROM audit_log WHERE action = 'application.create'")
    assert entry["entity_id"] == body["id"]
    assert json.loads(entry["detail"]) == {"reference": body["reference"], "service": NADRA}


@pytest.mark.parametrize(("fields", "status", "fragment"), [
    ({"documents_seen": ["passport_copy"]}, 400, "documents_seen: codes must be on the "
                                                 "checklist of nadra_snic_renewal"),
    ({"documents_seen": ["cnic_copy", "cnic_copy"]}, 400, "listed twice"),
    ({"documents_seen": "cnic_copy"}, 400, "documents_seen: expected array, got string"),
    ({"documents_seen": [1]}, 400, "documents_seen: every item must be string"),
    ({"service_code": None}, 400, "service_code: is required"),
    ({"service_code": "NADRA!"}, 400, "service_code: has the wrong format"),
    ({"service_code": "nadra_teleport"}, 404, "unknown service: nadra_teleport"),
    ({"service_code": "cda_property_transfer"}, 400, "does not include cda_property_transfer"),
    ({"fee_reference": "PSID 123"}, 400, "fee_reference: has the wrong format"),
    ({"fee_reference": 1234567}, 400, "fee_reference: expected string, got integer"),
    ({"agency_reference": "x" * 65}, 400, "agency_reference: has the wrong format"),
    ({"ticket_id": "not-a-uuid"}, 400, "ticket_id: has the wrong format"),
    ({"ticket_id": "01890000-0000-7000-8000-000000000000"}, 404, "unknown ticket"),
    ({"citizen_id": "01890000-0000-7000-8000-000000000000"}, 400, "citizen_id: differs"),
    ({"status": "ready"}, 400, "status: unknown field"),
    ({"reference": "X-1"}, 400, "reference: unknown field"),
])
def test_create_validation(client: FlaskClient, login: Login, node: Node,
                           at_counter: dict[str, Any], fields: dict[str, Any], status: int,
                           fragment: str) -> None:
    """Each invalid application is refused with a clear message; nothing is written."""
    headers = login("operator")
    body = {"ticket_id": at_counter["ticket"]["id"], "service_code": NADRA, **fields}
    before = outbox_mark(node)
    assert_error(create(client, headers, **{k: v for k, v in body.items() if v is not None}),
                 status, fragment)
    assert outbox_mark(node) == before


def test_create_needs_a_citizen(client: FlaskClient, login: Login, node: Node) -> None:
    """No ticket naming a citizen and no citizen_id: 400; unknown citizen: 404."""
    ticket = issue(client, login("reception"))["ticket"]
    operator = login("operator")
    before = outbox_mark(node)
    assert_error(create(client, operator, ticket_id=ticket["id"], service_code=NADRA), 400,
                 "citizen_id: is required")
    assert_error(create(client, operator, service_code=NADRA,
                        citizen_id="01890000-0000-7000-8000-000000000000"), 404,
                 "unknown citizen")
    assert outbox_mark(node) == before


def test_second_application_for_a_ticket_service_is_409(
        client: FlaskClient, login: Login, node: Node, at_counter: dict[str, Any]) -> None:
    """A replayed POST does not make a second application; the first reference is named."""
    first = new_application(client, login, at_counter)
    headers = login("operator")
    before = outbox_mark(node)
    assert_error(create(client, headers, ticket_id=at_counter["ticket"]["id"],
                        service_code=NADRA), 409, first["reference"])
    assert outbox_mark(node) == before


@pytest.mark.parametrize("user", ["reception", "volunteer", "kiosk", "display", "auditor"])
def test_who_may_not_create(client: FlaskClient, login: Login, node: Node,
                            at_counter: dict[str, Any], user: str) -> None:
    """Applications are made at the counter only."""
    headers = login(user)
    before = outbox_mark(node)
    assert_error(create(client, headers, ticket_id=at_counter["ticket"]["id"],
                        service_code=NADRA), 403, "may not do this")
    assert outbox_mark(node) == before


# --- reading ---------------------------------------------------------------------------------

def test_get_list_and_by_reference(client: FlaskClient, login: Login,
                                   at_counter: dict[str, Any]) -> None:
    """By id, by reference, and listed newest first with filters."""
    first = new_application(client, login, at_counter)
    second = new_application(client, login, at_counter, DGIP)
    headers = login("reception")
    assert ok(client.get(f"/api/applications/{first['id']}", headers=headers)) == first
    assert ok(client.get(f"/api/applications/by-reference/{second['reference']}",
                         headers=headers)) == second
    listed = ok(client.get("/api/applications", headers=headers))
    assert [a["id"] for a in listed] == [second["id"], first["id"]]
    ok(move(client, login("supervisor"), first["id"], "in_review"))
    in_review = ok(client.get("/api/applications?status=in_review", headers=headers))
    assert [a["id"] for a in in_review] == [first["id"]]
    by_ticket = ok(client.get("/api/applications", headers=headers,
                              query_string={"ticket_id": at_counter["ticket"]["id"]}))
    assert len(by_ticket) == 2


@pytest.mark.parametrize(("url", "status", "fragment"), [
    ("/api/applications/nope", 404, "unknown application: nope"),
    ("/api/applications/by-reference/ISB-01-NXXXXX-20260101-00001", 404,
     "unknown application reference"),
    ("/api/applications?status=lost", 400, "status: must be one of"),
    ("/api/applications?ticket_id=1", 400, "ticket_id: has the wrong format"),
    ("/api/applications?sort=asc", 400, "sort: unknown field"),
])
def test_read_errors(client: FlaskClient, login: Login, url: str, status: int,
                     fragment: str) -> None:
    """Missing records are 404, bad filters 400."""
    assert_error(client.get(url, headers=login("operator")), status, fragment)


def test_kiosk_may_not_read(client: FlaskClient, login: Login) -> None:
    """The feedback tablet sees no applications."""
    assert_error(client.get("/api/applications", headers=login("kiosk")), 403)


# --- status ----------------------------------------------------------------------------------

def reach(client: FlaskClient, login: Login, node: Node, app: dict[str, Any],
          path: list[str]) -> dict[str, Any]:
    """Walk an application along `path`: center statuses by a supervisor through the API,
    back-office ones as decisions from HQ; the application as it then is."""
    for status in path:
        if status in applications.CENTER_STATUSES:
            ok(move(client, login("supervisor"), app["id"], status))
        else:
            assert decide(node, app["reference"], status,
                          "Fee not paid" if status == "rejected" else None) is None
    body: dict[str, Any] = ok(client.get(f"/api/applications/{app['id']}",
                                         headers=login("supervisor")))
    return body


def test_full_life_cycle(client: FlaskClient, login: Login, node: Node,
                         at_counter: dict[str, Any]) -> None:
    """submitted -> in_review (supervisor) -> ready (back office, through HQ) -> collected
    (operator hands over)."""
    app = new_application(client, login, at_counter)
    supervisor, operator = login("supervisor"), login("operator")
    stamps = [app["status_hlc"]]
    app = ok(move(client, supervisor, app["id"], "in_review", note="now in_review"))
    assert app["status"] == "in_review" and app["notes"] == "now in_review"
    stamps.append(app["status_hlc"])
    app = reach(client, login, node, app, ["ready"])
    assert app["status"] == "ready" and app["decided_at"] and app["decision_reason"] is None
    stamps.append(app["status_hlc"])
    app = ok(move(client, operator, app["id"], "collected", note="now collected"))
    assert app["status"] == "collected" and app["notes"] == "now collected"
    stamps.append(app["status_hlc"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    moves = [(r["action"], json.loads(r["detail"])) for r in node.reader().query(
        "SELECT action, detail FROM audit_log WHERE action LIKE 'application.%' "
        "AND action != 'application.create' ORDER BY seq")]
    assert moves == [("application.status", {"from": "submitted", "to": "in_review"}),
                     ("application.decision", {"from": "in_review", "to": "ready"}),
                     ("application.status", {"from": "ready", "to": "collected"})]


@pytest.mark.parametrize(("path", "attempt", "fragment"), [
    (["in_review"], "submitted", "in_review; status never moves back to submitted"),
    (["in_review"], "in_review", "is already in_review"),
    (["ready"], "in_review", "ready; status never moves back to in_review"),
    (["rejected", "collected"], "in_review", "never moves back to in_review"),
    (["ready", "collected"], "collected", "already collected"),
])
def test_refused_moves_are_409(client: FlaskClient, login: Login, node: Node,
                               at_counter: dict[str, Any], path: list[str], attempt: str,
                               fragment: str) -> None:
    """Backward and same-rank moves are conflicts, and change nothing."""
    app = reach(client, login, node, new_application(client, login, at_counter), path)
    supervisor = login("supervisor")
    before = outbox_mark(node)
    assert_error(move(client, supervisor, app["id"], attempt), 409, fragment)
    assert outbox_mark(node) == before
    assert ok(client.get(f"/api/applications/{app['id']}", headers=supervisor)) == app


@pytest.mark.parametrize(("path", "attempt"), [
    ([], "ready"), (["in_review"], "ready"), (["in_review"], "rejected"),
    (["ready"], "rejected"), (["rejected", "collected"], "ready"),
])
def test_center_may_not_decide(client: FlaskClient, login: Login, node: Node,
                               at_counter: dict[str, Any], path: list[str],
                               attempt: str) -> None:
    """ready and rejected are the back office's (sync/merge.py APPLICATION_STATUS_SETTERS):
    not even a supervisor sets them at the center; 403, nothing written."""
    app = reach(client, login, node, new_application(client, login, at_counter), path)
    supervisor = login("supervisor")
    before = outbox_mark(node)
    assert_error(move(client, supervisor, app["id"], attempt), 403,
                 f"{attempt} is the agency back office's decision")
    assert outbox_mark(node) == before
    assert ok(client.get(f"/api/applications/{app['id']}", headers=supervisor)) == app


def test_setters_table_is_shared() -> None:
    """The center's statuses are exactly those the one table gives the center."""
    assert applications.CENTER_STATUSES == ("submitted", "in_review", "collected")
    assert {s for s, who in merge.APPLICATION_STATUS_SETTERS.items()
            if who == merge.BACK_OFFICE} == {"ready", "rejected"}
    assert set(merge.APPLICATION_STATUS_SETTERS) == set(applications.STATUSES)


@pytest.mark.parametrize(("path", "attempt"), [
    ([], "in_review"), (["rejected"], "collected"), ([], "collected"),
])
def test_operator_may_only_hand_over(client: FlaskClient, login: Login, node: Node,
                                     at_counter: dict[str, Any], path: list[str],
                                     attempt: str) -> None:
    """Every move but ready -> collected needs a supervisor."""
    app = reach(client, login, node, new_application(client, login, at_counter), path)
    operator = login("operator")
    before = outbox_mark(node)
    assert_error(move(client, operator, app["id"], attempt), 403, "only hand over")
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("body", "fragment"), [
    ({}, "status: is required"),
    ({"status": "approved"}, "status: must be one of"),
    ({"status": 2}, "status: expected string, got integer"),
    ({"status": "in_review", "note": ""}, "note: must be at least 1 characters"),
    ({"status": "in_review", "note": "x" * 501}, "note: must be at most 500 characters"),
    ({"status": "in_review", "by": "me"}, "by: unknown field"),
])
def test_status_validation(client: FlaskClient, login: Login, node: Node,
                           at_counter: dict[str, Any], body: dict[str, Any],
                           fragment: str) -> None:
    """Malformed status requests are 400s that write nothing."""
    app = new_application(client, login, at_counter)
    supervisor = login("supervisor")
    before = outbox_mark(node)
    assert_error(client.post(f"/api/applications/{app['id']}/status", json=body,
                             headers=supervisor), 400, fragment)
    assert outbox_mark(node) == before


def test_status_of_unknown_application_and_wrong_role(client: FlaskClient, login: Login,
                                                      node: Node) -> None:
    """404 for a missing id; reception cannot move statuses at all."""
    supervisor, reception = login("supervisor"), login("reception")
    before = outbox_mark(node)
    assert_error(move(client, supervisor, "nope", "ready"), 404, "unknown application")
    assert_error(move(client, reception, "nope", "ready"), 403)
    assert outbox_mark(node) == before
