"""Feedback: one rating per served ticket, linked to its last completed service."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge_node.node import Node
from tests.helpers import (
    DGIP,
    NADRA,
    Headers,
    assert_error,
    call_and_complete,
    issue_ticket,
    ok,
    open_counter,
    outbox_mark,
)

Login = Callable[[str], Headers]
COMMENT = "Bohat acha, jaldi kaam hua"


def serve(client: FlaskClient, login: Login, services: tuple[str, ...] = (NADRA,)
          ) -> dict[str, Any]:
    """Issue a ticket and complete each of its services at its own counter."""
    operator = login("operator")
    ticket = issue_ticket(client, login("reception"), services)
    for name in ("Counter 1", "Counter 2")[:len(services)]:
        ticket = call_and_complete(client, operator, open_counter(client, operator, name))
    return ticket


def rate(client: FlaskClient, headers: Headers, ticket_id: str, **fields: Any) -> Any:
    """POST /api/feedback."""
    return client.post("/api/feedback", json={"ticket_id": ticket_id, "rating": 5, **fields},
                       headers=headers)


def me(client: FlaskClient, headers: Headers) -> str:
    """Staff id behind `headers`."""
    return str(ok(client.get("/api/auth/me", headers=headers))["id"])


def test_kiosk_rates_a_served_ticket(client: FlaskClient, login: Login, node: Node) -> None:
    """Linked to service, counter and operator of the completed service."""
    ticket = serve(client, login)
    body = ok(rate(client, login("kiosk"), ticket["id"], rating=4, comment=f"  {COMMENT} "), 201)
    [segment] = node.reader().query("SELECT * FROM ticket_services WHERE ticket_id = ?",
                                    [ticket["id"]])
    assert body["rating"] == 4 and body["comment"] == COMMENT
    assert body["service_code"] == NADRA and body["counter_id"] == segment["counter_id"]
    assert body["staff_id"] == me(client, login("operator"))


def test_linked_to_the_last_completed_service(client: FlaskClient, login: Login) -> None:
    """A two-service visit is rated against the service finished last."""
    ticket = serve(client, login, (NADRA, DGIP))
    body = ok(rate(client, login("kiosk"), ticket["id"]), 201)
    counters = ok(client.get("/api/counters", headers=login("operator")))
    counter_2 = next(c["id"] for c in counters if c["name"] == "Counter 2")
    assert body["service_code"] == DGIP and body["counter_id"] == counter_2


def test_rating_after_first_of_two_services(client: FlaskClient, login: Login) -> None:
    """A citizen leaving after the first service can already rate it."""
    operator = login("operator")
    ticket = issue_ticket(client, login("reception"), (NADRA, DGIP))
    call_and_complete(client, operator, open_counter(client, operator))
    body = ok(rate(client, login("kiosk"), ticket["id"], rating=3), 201)
    assert body["service_code"] == NADRA and body["comment"] is None


def test_blank_comment_is_no_comment(client: FlaskClient, login: Login) -> None:
    """Whitespace only is stored as null."""
    ticket = serve(client, login)
    assert ok(rate(client, login("kiosk"), ticket["id"], comment="   "), 201)["comment"] is None


def test_one_feedback_per_ticket(client: FlaskClient, login: Login, node: Node) -> None:
    """A replayed or second rating is a 409 and writes nothing."""
    ticket = serve(client, login)
    kiosk = login("kiosk")
    ok(rate(client, kiosk, ticket["id"]), 201)
    before = outbox_mark(node)
    assert_error(rate(client, kiosk, ticket["id"], rating=1), 409,
                 f"ticket {ticket['number']} has been rated already")
    assert outbox_mark(node) == before


def test_ticket_without_completed_service_is_409(client: FlaskClient, login: Login,
                                                 node: Node) -> None:
    """Waiting (not yet served) tickets cannot be rated."""
    ticket = issue_ticket(client, login("reception"))
    kiosk = login("kiosk")
    before = outbox_mark(node)
    assert_error(rate(client, kiosk, ticket["id"]), 409, "has no completed service to rate yet")
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"rating": 0}, "rating: must be at least 1"),
    ({"rating": 6}, "rating: must be at most 5"),
    ({"rating": -3}, "rating: must be at least 1"),
    ({"rating": 4.5}, "rating: expected integer, got number"),
    ({"rating": "5"}, "rating: expected integer, got string"),
    ({"rating": True}, "rating: expected integer, got boolean"),
    ({"rating": None}, "rating: is required"),
    ({"comment": "x" * 501}, "comment: must be at most 500 characters"),
    ({"comment": 5}, "comment: expected string, got integer"),
    ({"ticket_id": "A-001"}, "ticket_id: has the wrong format"),
    ({"ticket_id": None}, "ticket_id: is required"),
    ({"staff_id": "x"}, "staff_id: unknown field"),
    ({"ticket_id": "01890000-0000-7000-8000-000000000000"}, "unknown ticket"),
])
def test_feedback_validation(client: FlaskClient, login: Login, node: Node,
                             fields: dict[str, Any], fragment: str) -> None:
    """Each bad rating gets a clear error (400, or 404 for an unknown ticket); nothing written."""
    ticket = serve(client, login)
    kiosk = login("kiosk")
    before = outbox_mark(node)
    body = {"ticket_id": ticket["id"], "rating": 5, **fields}
    resp = client.post("/api/feedback", json={k: v for k, v in body.items() if v is not None},
                       headers=kiosk)
    assert_error(resp, 404 if fragment == "unknown ticket" else 400, fragment)
    assert outbox_mark(node) == before


@pytest.mark.parametrize("user", ["reception", "volunteer", "display", "auditor", "technician"])
def test_who_may_not_rate(client: FlaskClient, login: Login, node: Node, user: str) -> None:
    """Feedback comes from the kiosk (or a counter on its behalf), not reception."""
    ticket = serve(client, login)
    headers = login(user)
    before = outbox_mark(node)
    assert_error(rate(client, headers, ticket["id"]), 403, "may not do this")
    assert outbox_mark(node) == before


def test_supervisor_lists_the_day(client: FlaskClient, login: Login, node: Node) -> None:
    """Listed by ticket business day; another day is empty; counted in the KPIs."""
    ticket = serve(client, login)
    given = ok(rate(client, login("kiosk"), ticket["id"], rating=2, comment=COMMENT), 201)
    supervisor = login("supervisor")
    assert ok(client.get("/api/feedback", headers=supervisor)) == [given]
    assert ok(client.get(f"/api/feedback?date={node.today()}", headers=supervisor)) == [given]
    assert ok(client.get("/api/feedback?date=2020-01-01", headers=supervisor)) == []
    kpi = ok(client.get("/api/kpi", headers=supervisor))
    assert kpi["feedback_count"] == 1 and kpi["ratings"]["2"] == 1


@pytest.mark.parametrize(("user", "query", "status", "fragment"), [
    ("kiosk", "", 403, "may not do this"),
    ("operator", "", 403, "may not do this"),
    ("supervisor", "?date=yesterday", 400, "date: has the wrong format"),
    ("supervisor", "?day=2026-01-01", 400, "day: unknown field"),
])
def test_list_errors(client: FlaskClient, login: Login, user: str, query: str, status: int,
                     fragment: str) -> None:
    """Only supervisors read feedback; the date must be YYYY-MM-DD."""
    assert_error(client.get(f"/api/feedback{query}", headers=login(user)), status, fragment)


def test_audit_keeps_the_comment_out(client: FlaskClient, login: Login, node: Node) -> None:
    """The audit entry names ticket and rating; the citizen's words stay in feedback only."""
    ticket = serve(client, login)
    given = ok(rate(client, login("kiosk"), ticket["id"], comment=COMMENT), 201)
    [entry] = node.reader().query("SELECT * FROM audit_log WHERE action = 'feedback.create'")
    assert entry["entity_id"] == given["id"]
    assert json.loads(entry["detail"]) == {"ticket_id": ticket["id"], "rating": 5}
    assert COMMENT not in json.dumps(entry)
