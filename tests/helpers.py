"""Helpers shared by the tests: a settable clock, issuing visits, driving counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.node import Node

Headers = dict[str, str]

# A Monday morning in Islamabad (10:00 PKT): far from midnight, so the business day is fixed.
START = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
NADRA = "nadra_snic_renewal"
DGIP = "dgip_passport_renewal"


class FakeClock:
    """A clock for `Node(settings, now=clock)` that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        """Stand still at `start`."""
        self.moment = start

    def __call__(self) -> datetime:
        """The current (fake) time."""
        return self.moment

    def advance(self, **delta: float) -> datetime:
        """Move forward by a timedelta given as keywords (minutes=3, seconds=10...)."""
        self.moment += timedelta(**delta)
        return self.moment


def outbox_mark(node: Node) -> tuple[int, int | None]:
    """(count, max seq) of the outbox: equal before and after means nothing was written."""
    row = node.reader().execute("SELECT count(*), max(seq) FROM sync_outbox").fetchone()
    return row[0], row[1]


def assert_error(resp: Any, status: int, fragment: str = "") -> dict[str, Any]:
    """The response is the one JSON error shape, with `fragment` in its message."""
    body: dict[str, Any] = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"ok", "error", "errors", "status"}, body
    assert body["ok"] is False and body["status"] == status
    assert fragment in body["error"], body["error"]
    return body


def ok(resp: Any, status: int = 200) -> Any:
    """The JSON body of a response that must have `status`."""
    assert resp.status_code == status, resp.get_json()
    return resp.get_json()


def log_in(client: FlaskClient, user: str) -> Headers:
    """A new session of a demo user (uncached, unlike conftest's `login`)."""
    resp = client.post("/api/auth/login", json={"username": user,
                                                "password": user + DEMO_PASSWORD_SUFFIX})
    return {"Authorization": f"Bearer {ok(resp)['token']}"}


def counter_id(client: FlaskClient, headers: Headers, name: str) -> str:
    """Id of the counter called `name` (demo counters: "Counter 1" NADRA, "Counter 2" DGIP)."""
    for counter in ok(client.get("/api/counters", headers=headers)):
        if counter["name"] == name:
            return str(counter["id"])
    raise AssertionError(f"no counter named {name}")


def set_counter(client: FlaskClient, headers: Headers, counter: str, state: str,
                reason: str | None = None) -> Any:
    """POST a counter state change and return the response."""
    body = {"state": state} if reason is None else {"state": state, "reason": reason}
    return client.post(f"/api/counters/{counter}/state", json=body, headers=headers)


def open_counter(client: FlaskClient, headers: Headers, name: str = "Counter 1") -> str:
    """Open a demo counter; return its id."""
    counter = counter_id(client, headers, name)
    ok(set_counter(client, headers, counter, "open"))
    return counter


def issue(client: FlaskClient, headers: Headers, services: Sequence[str] = (NADRA,),
          priority: str = "normal", missing: Sequence[str] = ()) -> dict[str, Any]:
    """Register a visit; return the response body ({"visit": ..., "ticket": ...})."""
    body: dict[str, Any] = {"services": list(services), "priority": priority}
    if missing:
        body["missing_documents"] = list(missing)
    result: dict[str, Any] = ok(client.post("/api/visits", json=body, headers=headers), 201)
    return result


def issue_ticket(client: FlaskClient, headers: Headers, services: Sequence[str] = (NADRA,),
                 priority: str = "normal") -> dict[str, Any]:
    """Register a visit and return its ticket."""
    ticket: dict[str, Any] = issue(client, headers, services, priority)["ticket"]
    return ticket


def call_next(client: FlaskClient, headers: Headers, counter: str) -> dict[str, Any] | None:
    """Call the next ticket to `counter`; None when the queue is empty."""
    ticket: dict[str, Any] | None = ok(
        client.post(f"/api/counters/{counter}/call-next", headers=headers))["ticket"]
    return ticket


def act(client: FlaskClient, headers: Headers, ticket_id: str, action: str,
        body: dict[str, Any] | None = None) -> Any:
    """POST a ticket action (recall, no-show, rejoin, hold, resume, transfer, complete)."""
    return client.post(f"/api/tickets/{ticket_id}/{action}", json=body, headers=headers)


def call_and_complete(client: FlaskClient, headers: Headers, counter: str) -> dict[str, Any]:
    """Call the next ticket to `counter` and complete its current service."""
    called = call_next(client, headers, counter)
    assert called is not None, "nothing to call"
    done: dict[str, Any] = ok(act(client, headers, called["id"], "complete"))
    return done
