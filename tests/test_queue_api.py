"""The queue through the JSON API on a real SQLCipher node: every step of a visit's flow."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge_node.api import create_app
from edge_node.api.routing import ROUTES
from edge_node.config import Settings, load_settings
from edge_node.domain import counters, kpi, queue, visits
from edge_node.node import Node
from edge_node.service import jobs
from tests.helpers import (
    DGIP,
    NADRA,
    FakeClock,
    Headers,
    act,
    assert_error,
    call_and_complete,
    call_next,
    counter_id,
    issue,
    issue_ticket,
    log_in,
    ok,
    open_counter,
    outbox_mark,
    set_counter,
)

Login = Callable[[str], Headers]
USERS = frozenset({"manager", "reception", "operator", "supervisor", "volunteer", "technician",
                   "auditor", "kiosk", "display"})
STAFF = USERS - {"kiosk", "display"}
OPERATORS = frozenset({"operator", "supervisor", "manager"})
RECEPTION = frozenset({"reception", "volunteer", "supervisor", "manager"})
BOARD = frozenset({"display", "reception", "operator", "supervisor", "manager", "volunteer"})
REPORTS = frozenset({"supervisor", "manager", "auditor"})


@pytest.fixture(scope="module")
def signed_in(template_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, dict[str, Headers]]:
    """The demo node with every user logged in at START: Argon2 runs once per module."""
    data_dir = tmp_path_factory.mktemp("queue") / "node"
    shutil.copytree(template_dir, data_dir)
    opened = Node(load_settings(str(data_dir), environ={}), now=FakeClock())
    client = create_app(opened, {"TESTING": True}).test_client()
    headers = {user: log_in(client, user) for user in USERS}
    opened.close()
    return data_dir, headers


@pytest.fixture
def settings(tmp_path: Path, signed_in: tuple[Path, dict[str, Headers]]) -> Settings:
    """A fresh copy of the signed-in node (overrides conftest's `settings`)."""
    data_dir = tmp_path / "node"
    shutil.copytree(signed_in[0], data_dir)
    return load_settings(str(data_dir), environ={})


@pytest.fixture
def login(signed_in: tuple[Path, dict[str, Headers]]) -> Login:
    """`login("operator")`: headers of the session opened in the copied node."""
    return signed_in[1].__getitem__


@pytest.fixture
def node(clocked_node: Node) -> Node:
    """The demo node on the fake clock (overrides conftest's `node`)."""
    return clocked_node


@pytest.fixture
def op(login: Login) -> Headers:
    """Headers of the counter operator."""
    return login("operator")


@pytest.fixture
def rec(login: Login) -> Headers:
    """Headers of the receptionist."""
    return login("reception")


def ticket_row(node: Node, ticket_id: str) -> dict[str, Any]:
    """The ticket as stored."""
    rows = list(node.reader().query("SELECT * FROM tickets WHERE id = ?", [ticket_id]))
    assert rows, ticket_id
    return rows[0]


# --- counters -------------------------------------------------------------------------------

def test_counter_open_pause_close(client: FlaskClient, op: Headers) -> None:
    """A counter opens, pauses with a reason, reopens and closes."""
    counter = counter_id(client, op, "Counter 1")
    assert ok(set_counter(client, op, counter, "open"))["state"] == "open"
    paused = ok(set_counter(client, op, counter, "paused", "prayer"))
    assert (paused["state"], paused["pause_reason"]) == ("paused", "prayer")
    reopened = ok(set_counter(client, op, counter, "open"))
    assert (reopened["state"], reopened["pause_reason"]) == ("open", None)
    assert ok(set_counter(client, op, counter, "closed"))["state"] == "closed"


@pytest.mark.parametrize(("body", "fragment"), [
    ({"state": "paused"}, "reason: pausing needs one of"),
    ({"state": "paused", "reason": "lunch"}, "reason: must be one of"),
    ({"state": "paused", "reason": ""}, "reason: must be one of"),
    ({"state": "broken"}, "state: must be one of"),
    ({}, "state: is required"),
    ({"state": "open", "why": "x"}, "why: unknown field"),
])
def test_counter_state_validation(client: FlaskClient, op: Headers, node: Node,
                                  body: dict[str, Any], fragment: str) -> None:
    """A bad state or pause reason is a 400 naming the field; nothing is written."""
    counter = open_counter(client, op)
    before = outbox_mark(node)
    resp = client.post(f"/api/counters/{counter}/state", json=body, headers=op)
    assert_error(resp, 400, fragment)
    assert outbox_mark(node) == before


def test_counter_same_state_is_409(client: FlaskClient, op: Headers) -> None:
    """Opening an open counter is a conflict."""
    counter = open_counter(client, op)
    assert_error(set_counter(client, op, counter, "open"), 409, "already open")


@pytest.mark.parametrize("held", [False, True], ids=["called", "held"])
def test_close_refused_with_ticket_at_counter(client: FlaskClient, op: Headers, rec: Headers,
                                              node: Node, held: bool) -> None:
    """A counter cannot close while a ticket is called to it or held at it."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    call_next(client, op, counter)
    if held:
        ok(act(client, op, ticket["id"], "hold", {"reason": "fetching a photocopy"}))
    before = outbox_mark(node)
    assert_error(set_counter(client, op, counter, "closed"), 409, "called or held ticket")
    assert outbox_mark(node) == before


# --- call next ------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["closed", "paused"])
def test_call_next_needs_an_open_counter(client: FlaskClient, op: Headers, rec: Headers,
                                         node: Node, state: str) -> None:
    """A closed or paused counter calls nobody."""
    counter = counter_id(client, op, "Counter 1")
    if state == "paused":
        ok(set_counter(client, op, counter, "paused", "break"))
    issue_ticket(client, rec)
    before = outbox_mark(node)
    resp = client.post(f"/api/counters/{counter}/call-next", headers=op)
    assert_error(resp, 409, f"is {state}; open it first")
    assert outbox_mark(node) == before


def test_call_next_with_a_called_ticket_is_409(client: FlaskClient, op: Headers,
                                               rec: Headers, node: Node) -> None:
    """One called ticket per counter: finish it before calling the next."""
    counter = open_counter(client, op)
    issue_ticket(client, rec)
    issue_ticket(client, rec)
    assert call_next(client, op, counter) is not None
    before = outbox_mark(node)
    resp = client.post(f"/api/counters/{counter}/call-next", headers=op)
    assert_error(resp, 409, "already has a called ticket")
    assert outbox_mark(node) == before


def test_call_next_on_empty_queue(client: FlaskClient, op: Headers, rec: Headers,
                                  node: Node) -> None:
    """No waiting ticket for the counter's services: ticket is null and nothing changes."""
    counter = open_counter(client, op)
    issue_ticket(client, rec, [DGIP])  # another queue: Counter 1 does not serve it
    before = outbox_mark(node)
    assert call_next(client, op, counter) is None
    assert outbox_mark(node) == before


def test_call_next_unknown_counter_is_404(client: FlaskClient, op: Headers) -> None:
    """An unknown counter id is named."""
    resp = client.post("/api/counters/no-such-counter/call-next", headers=op)
    assert_error(resp, 404, "unknown counter")


def test_called_ticket_is_at_the_counter(client: FlaskClient, op: Headers, rec: Headers,
                                         clock: FakeClock) -> None:
    """Calling sets status, counter, staff and the call time."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    clock.advance(minutes=3)
    called = call_next(client, op, counter)
    assert called is not None and called["id"] == ticket["id"]
    me = ok(client.get("/api/auth/me", headers=op))
    assert (called["status"], called["counter_id"], called["staff_id"]) == (
        "called", counter, me["id"])
    assert called["called_at"] == "2026-03-02T05:03:00.000000Z"


# --- recall, no-show, rejoin, expiry ---------------------------------------------------------

def test_recall_counts_and_shows_on_board(client: FlaskClient, op: Headers, rec: Headers,
                                          login: Login) -> None:
    """Each recall increments recall_count; the display board shows it."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    call_next(client, op, counter)
    assert ok(act(client, op, ticket["id"], "recall"))["recall_count"] == 1
    assert ok(act(client, op, ticket["id"], "recall"))["recall_count"] == 2
    board = ok(client.get("/api/board", headers=login("display")))
    assert [(r["number"], r["counter"], r["recall_count"]) for r in board] == [
        (ticket["number"], "Counter 1", 2)]


def test_board_shows_the_newest_call_first(client: FlaskClient, op: Headers, rec: Headers,
                                           login: Login, clock: FakeClock) -> None:
    """A recall puts the ticket back at the top of the board."""
    nadra, dgip = open_counter(client, op), open_counter(client, op, "Counter 2")
    first, second = issue_ticket(client, rec), issue_ticket(client, rec, [DGIP])
    call_next(client, op, nadra)
    clock.advance(seconds=30)
    call_next(client, op, dgip)
    display = login("display")
    assert [r["number"] for r in ok(client.get("/api/board", headers=display))] == [
        second["number"], first["number"]]
    clock.advance(seconds=30)
    ok(act(client, op, first["id"], "recall"))
    assert [r["number"] for r in ok(client.get("/api/board", headers=display))] == [
        first["number"], second["number"]]


def test_no_show_then_rejoin_keeps_the_place(client: FlaskClient, op: Headers, rec: Headers,
                                             clock: FakeClock, node: Node) -> None:
    """A no-show who rejoins in time is called before tickets issued after them."""
    counter = open_counter(client, op)
    first, second, third = (issue_ticket(client, rec) for _ in range(3))
    assert call_next(client, op, counter)["id"] == first["id"]  # type: ignore[index]
    gone = ok(act(client, op, first["id"], "no-show"))
    assert (gone["status"], gone["counter_id"]) == ("no_show", None)
    assert gone["rejoin_until"] == "2026-03-02T05:10:00.000000Z"
    assert call_next(client, op, counter)["id"] == second["id"]  # type: ignore[index]
    fourth = issue_ticket(client, rec)
    clock.advance(minutes=9)
    back = ok(act(client, rec, first["id"], "rejoin"))
    assert (back["status"], back["rejoin_until"]) == ("waiting", None)
    ok(act(client, op, second["id"], "complete"))
    order = [call_and_complete(client, op, counter)["id"] for _ in range(3)]
    assert order == [first["id"], third["id"], fourth["id"]]
    assert ticket_row(node, first["id"])["status"] == "done"


def test_rejoin_after_the_window_is_409_and_expiry_closes_it(
        client: FlaskClient, op: Headers, rec: Headers, clock: FakeClock, node: Node) -> None:
    """After the grace window the ticket cannot rejoin; the expiry job closes it and its visit."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    call_next(client, op, counter)
    ok(act(client, op, ticket["id"], "no-show"))
    assert jobs.expire_no_shows(node) == 0  # still inside the window
    clock.advance(minutes=10, seconds=1)
    before = outbox_mark(node)
    assert_error(act(client, rec, ticket["id"], "rejoin"), 409, "rejoin window has ended")
    assert outbox_mark(node) == before
    assert jobs.expire_no_shows(node) == 1
    assert jobs.expire_no_shows(node) == 0
    row = ticket_row(node, ticket["id"])
    assert (row["status"], row["completed_at"]) == ("expired", "2026-03-02T05:10:01.000000Z")
    visit = node.reader().execute("SELECT status FROM visits WHERE id = ?",
                                  [ticket["visit_id"]]).fetchone()
    assert visit[0] == "no_show"
    assert_error(act(client, rec, ticket["id"], "rejoin"), 409, "is expired")


def test_rejoin_of_a_waiting_ticket_is_409(client: FlaskClient, rec: Headers) -> None:
    """Only a no-show ticket may rejoin."""
    ticket = issue_ticket(client, rec)
    assert_error(act(client, rec, ticket["id"], "rejoin"), 409, "is waiting")


# --- hold and resume -------------------------------------------------------------------------

def test_hold_and_resume(client: FlaskClient, op: Headers, rec: Headers, node: Node) -> None:
    """While one ticket is held the counter serves another; resume waits for it to finish."""
    counter = open_counter(client, op)
    first, second = issue_ticket(client, rec), issue_ticket(client, rec)
    call_next(client, op, counter)
    held = ok(act(client, op, first["id"], "hold", {"reason": "fetching a photocopy"}))
    assert (held["status"], held["hold_reason"], held["counter_id"]) == (
        "held", "fetching a photocopy", counter)
    assert call_next(client, op, counter)["id"] == second["id"]  # type: ignore[index]
    before = outbox_mark(node)
    assert_error(act(client, op, first["id"], "resume"), 409, "another called ticket")
    assert outbox_mark(node) == before
    ok(act(client, op, second["id"], "complete"))
    resumed = ok(act(client, op, first["id"], "resume"))
    assert (resumed["status"], resumed["hold_reason"], resumed["counter_id"]) == (
        "called", None, counter)
    assert ok(act(client, op, first["id"], "complete"))["status"] == "done"


def test_resume_needs_an_open_counter(client: FlaskClient, op: Headers, rec: Headers,
                                      node: Node) -> None:
    """A held ticket cannot be resumed at a paused counter."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    call_next(client, op, counter)
    ok(act(client, op, ticket["id"], "hold", {"reason": "photocopy"}))
    set_counter(client, op, counter, "paused", "break")
    before = outbox_mark(node)
    assert_error(act(client, op, ticket["id"], "resume"), 409, "is paused; open it first")
    assert outbox_mark(node) == before


@pytest.mark.parametrize(("body", "fragment"), [
    ({}, "reason: is required"),
    ({"reason": ""}, "reason: must be at least 1"),
    ({"reason": "x" * 201}, "reason: must be at most 200"),
    ({"reason": 5}, "reason: expected string"),
])
def test_hold_validation(client: FlaskClient, op: Headers, rec: Headers, node: Node,
                         body: dict[str, Any], fragment: str) -> None:
    """A hold needs a short reason."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    call_next(client, op, counter)
    before = outbox_mark(node)
    assert_error(act(client, op, ticket["id"], "hold", body), 400, fragment)
    assert outbox_mark(node) == before


# --- transfer --------------------------------------------------------------------------------

def test_transfer_to_another_service(client: FlaskClient, op: Headers, rec: Headers,
                                     node: Node) -> None:
    """The ticket joins the other service's queue with its number; only its counters call it."""
    nadra, dgip = open_counter(client, op), open_counter(client, op, "Counter 2")
    ticket = issue_ticket(client, rec)
    call_next(client, op, nadra)
    moved = ok(act(client, op, ticket["id"], "transfer", {"service_code": DGIP}))
    assert (moved["status"], moved["service_code"], moved["queue_code"], moved["number"]) == (
        "waiting", DGIP, "dgip", ticket["number"])
    queues = {q["code"]: q for q in ok(client.get("/api/queues", headers=op))}
    assert [t["number"] for t in queues["dgip"]["tickets"]] == [ticket["number"]]
    assert queues["nadra"]["waiting"] == 0
    assert call_next(client, op, nadra) is None
    assert call_next(client, op, dgip)["id"] == ticket["id"]  # type: ignore[index]


def test_transfer_to_a_specific_counter(client: FlaskClient, op: Headers, rec: Headers,
                                        login: Login) -> None:
    """A ticket sent to one counter is called there and nowhere else."""
    created = ok(client.post("/api/counters", json={"name": "Counter 1B",
                                                     "services": [NADRA]},
                             headers=login("manager")), 201)
    first = open_counter(client, op)
    other = open_counter(client, op, "Counter 1B")
    assert created["id"] == other
    ticket = issue_ticket(client, rec)
    call_next(client, op, first)
    moved = ok(act(client, op, ticket["id"], "transfer", {"counter_id": other}))
    assert (moved["status"], moved["target_counter_id"]) == ("waiting", other)
    assert call_next(client, op, first) is None
    called = call_next(client, op, other)
    assert called is not None and called["id"] == ticket["id"]
    assert called["target_counter_id"] is None


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({}, 400, "needs service_code, counter_id or both"),
    ({"service_code": NADRA, "counter_id": "@counter2"}, 400, "does not serve"),
    ({"counter_id": "@counter2"}, 400, "does not serve"),
    ({"service_code": "nadra_teleport"}, 404, "unknown service"),
    ({"service_code": "Bad Code"}, 400, "service_code: has the wrong format"),
    ({"counter_id": "not-a-uuid"}, 400, "counter_id: has the wrong format"),
    ({"counter_id": "01900000-0000-7000-8000-000000000000"}, 404, "unknown counter"),
])
def test_transfer_validation(client: FlaskClient, op: Headers, rec: Headers, node: Node,
                             body: dict[str, Any], status: int, fragment: str) -> None:
    """A transfer to nowhere, or to a counter that does not serve the service, changes nothing."""
    counter = open_counter(client, op)
    counter2 = counter_id(client, op, "Counter 2")
    body = {k: counter2 if v == "@counter2" else v for k, v in body.items()}
    ticket = issue_ticket(client, rec)
    call_next(client, op, counter)
    before = outbox_mark(node)
    assert_error(act(client, op, ticket["id"], "transfer", body), status, fragment)
    assert outbox_mark(node) == before
    assert ticket_row(node, ticket["id"])["status"] == "called"


def test_transfer_to_a_service_already_on_the_ticket_is_409(
        client: FlaskClient, op: Headers, rec: Headers, node: Node) -> None:
    """Sending a ticket to a service it will get anyway would serve that service twice."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec, [NADRA, DGIP])
    call_next(client, op, counter)
    before = outbox_mark(node)
    resp = act(client, op, ticket["id"], "transfer", {"service_code": DGIP})
    assert_error(resp, 409, f"already has {DGIP}")
    assert outbox_mark(node) == before
    same = ok(act(client, op, ticket["id"], "transfer", {"service_code": NADRA}))
    assert (same["status"], same["service_code"]) == ("waiting", NADRA)


# --- complete --------------------------------------------------------------------------------

def test_complete_moves_a_multi_service_ticket_on(client: FlaskClient, op: Headers,
                                                  rec: Headers, node: Node) -> None:
    """After its first service the ticket waits in the next queue with the same number."""
    nadra, dgip = open_counter(client, op), open_counter(client, op, "Counter 2")
    ticket = issue_ticket(client, rec, [NADRA, DGIP])
    assert ticket["number"] == "A-001"
    call_next(client, op, nadra)
    moved = ok(act(client, op, ticket["id"], "complete"))
    assert (moved["status"], moved["service_code"], moved["queue_code"], moved["number"],
            moved["counter_id"]) == ("waiting", DGIP, "dgip", "A-001", None)
    visit = node.reader().execute("SELECT status FROM visits WHERE id = ?",
                                  [ticket["visit_id"]]).fetchone()
    assert visit[0] == "open"
    assert call_next(client, op, nadra) is None
    assert call_next(client, op, dgip)["number"] == "A-001"  # type: ignore[index]
    done = ok(act(client, op, ticket["id"], "complete"))
    assert done["status"] == "done" and done["completed_at"]
    visit = node.reader().execute("SELECT status, closed_at FROM visits WHERE id = ?",
                                  [ticket["visit_id"]]).fetchone()
    assert visit[0] == "closed" and visit[1] == done["completed_at"]
    segments = node.reader().execute(
        "SELECT service_code, status FROM ticket_services WHERE ticket_id = ? ORDER BY position",
        [ticket["id"]]).fetchall()
    assert [tuple(s) for s in segments] == [(NADRA, "done"), (DGIP, "done")]


@pytest.mark.parametrize(("action", "body"), [
    ("complete", None),
    ("recall", None),
    ("no-show", None),
    ("hold", {"reason": "again"}),
    ("resume", None),
    ("rejoin", None),
    ("transfer", {"service_code": DGIP}),
])
def test_replay_on_a_completed_ticket_is_409(client: FlaskClient, op: Headers, rec: Headers,
                                             node: Node, action: str,
                                             body: dict[str, Any] | None) -> None:
    """A replayed action on a finished ticket is a conflict and writes nothing."""
    counter = open_counter(client, op)
    ticket = issue_ticket(client, rec)
    call_and_complete(client, op, counter)
    before = outbox_mark(node)
    assert_error(act(client, op, ticket["id"], action, body), 409,
                 f"ticket {ticket['number']} is done")
    assert outbox_mark(node) == before


def test_action_on_unknown_ticket_is_404(client: FlaskClient, op: Headers) -> None:
    """An unknown ticket id is named, not a crash."""
    assert_error(act(client, op, "no-such-ticket", "complete"), 404, "unknown ticket")


# --- reception: numbering, missing documents, priority ---------------------------------------

def test_numbering_per_queue_and_day(client: FlaskClient, rec: Headers,
                                     clock: FakeClock) -> None:
    """A-001, A-002 in NADRA's queue; DGIP counts on its own; a new day starts at 001."""
    numbers = [issue_ticket(client, rec, [code])["number"]
               for code in (NADRA, NADRA, DGIP, "nadra_new_snic", DGIP)]
    assert numbers == ["A-001", "A-002", "B-001", "A-003", "B-002"]
    clock.advance(days=1)
    tomorrow = issue_ticket(client, log_in(client, "reception"), [NADRA])
    assert (tomorrow["number"], tomorrow["business_date"]) == ("A-001", "2026-03-03")


def test_missing_documents_ends_the_visit(client: FlaskClient, rec: Headers, node: Node,
                                          login: Login) -> None:
    """No ticket is issued; the visit is closed as missing_documents and counted."""
    result = issue(client, rec, [NADRA], missing=["cnic_copy"])
    assert result["ticket"] is None
    visit = result["visit"]
    assert (visit["status"], visit["missing_documents"]) == ("missing_documents", ["cnic_copy"])
    assert visit["closed_at"] == visit["created_at"]
    assert node.reader().execute("SELECT count(*) FROM tickets").fetchone()[0] == 0
    kpis = ok(client.get("/api/kpi", headers=login("supervisor")))
    assert (kpis["missing_documents"], kpis["issued"]) == (1, 0)


def test_priority_interleaving(client: FlaskClient, op: Headers, rec: Headers,
                               node: Node) -> None:
    """With priority_ratio=2 and both classes waiting: P, P, N, P, P, N, then what is left."""
    assert node.settings["priority_ratio"] == 2
    counter = open_counter(client, op)
    classes = ["normal", "elderly", "normal", "disabled", "women_infant", "elderly",
               "normal", "disabled", "elderly"]
    issued = [issue_ticket(client, rec, [NADRA], p) for p in classes]
    kinds = {t["id"]: ("N" if t["priority"] == "normal" else "P") + t["number"][-1]
             for t in issued}
    order = [kinds[call_and_complete(client, op, counter)["id"]] for _ in issued]
    assert order == ["P2", "P4", "N1", "P5", "P6", "N3", "P8", "P9", "N7"]


@pytest.mark.parametrize(("ratio", "expected"), [
    (1, "PNPNPPP"),
    (3, "PPPNPPN"),
])
def test_priority_ratio_setting(node: Node, ratio: int, expected: str) -> None:
    """The ratio is the longest run of priority calls while a normal ticket waits."""
    reader = node.reader()
    actor = dict(next(reader.query("SELECT id, role FROM staff WHERE username = 'operator'")))
    counter = next(reader.query("SELECT id FROM counters WHERE name = 'Counter 1'"))["id"]
    stamp, day = node.timestamp(), node.today()

    def setup(db: Any) -> None:
        for priority in ["normal"] * 2 + ["elderly"] * 5:
            visits.create_visit(db, services=[NADRA], priority=priority, citizen_id=None,
                                missing_documents=[], actor=actor, now=stamp, day=day)
        counters.set_state(db, counter, "open", actor, stamp)

    def serve_one(db: Any) -> str:
        ticket = queue.call_next(db, counter, actor, stamp, ratio)
        assert ticket is not None
        queue.complete(db, ticket["id"], actor, stamp)
        return "P" if ticket["priority_weight"] else "N"

    node.write(setup)
    assert "".join(node.write(serve_one) for _ in range(7)) == expected


# --- roles -----------------------------------------------------------------------------------

T = "/api/tickets/01900000-0000-7000-8000-000000000001"
C = "/api/counters/01900000-0000-7000-8000-000000000002"
# Who may call each queue route, stated here independently of edge_node.domain.roles.
QUEUE_ROUTES: list[tuple[str, str, frozenset[str]]] = [
    ("POST", "/api/visits", RECEPTION),
    ("GET", T, STAFF),
    ("GET", "/api/counters", STAFF),
    ("POST", "/api/counters", frozenset({"manager"})),
    ("POST", f"{C}/state", OPERATORS),
    ("POST", f"{C}/call-next", OPERATORS),
    ("POST", f"{T}/recall", OPERATORS),
    ("POST", f"{T}/no-show", OPERATORS),
    ("POST", f"{T}/rejoin", RECEPTION | OPERATORS),
    ("POST", f"{T}/hold", OPERATORS),
    ("POST", f"{T}/resume", OPERATORS),
    ("POST", f"{T}/transfer", OPERATORS),
    ("POST", f"{T}/complete", OPERATORS),
    ("GET", "/api/queues", STAFF),
    ("GET", "/api/board", BOARD),
    ("GET", "/api/kpi", REPORTS),
]
REFUSED = [(m, r, u) for m, r, allowed in QUEUE_ROUTES for u in sorted(USERS - allowed)]
ALLOWED = [(m, r, u) for m, r, allowed in QUEUE_ROUTES for u in sorted(allowed)]


def _route_key(method: str, route: str) -> tuple[str, str]:
    """(method, Flask rule) of a concrete URL in QUEUE_ROUTES."""
    return method, route.replace(T, "/api/tickets/<ticket_id>").replace(
        C, "/api/counters/<counter_id>")


@pytest.fixture(scope="module")
def everyone(signed_in: tuple[Path, dict[str, Headers]], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[FlaskClient, dict[str, Headers], Node]]:
    """One node shared by the role tests (they write nothing), every user signed in."""
    data_dir = tmp_path_factory.mktemp("roles") / "node"
    shutil.copytree(signed_in[0], data_dir)
    shared = Node(load_settings(str(data_dir), environ={}), now=FakeClock())
    yield create_app(shared, {"TESTING": True}).test_client(), signed_in[1], shared
    shared.close()


def test_role_table_covers_every_queue_route() -> None:
    """Every route of the queue, visits and reports blueprints is in QUEUE_ROUTES."""
    declared = {(s.method, s.rule) for s in ROUTES if s.tag in {"queue", "visits", "reports"}}
    assert {_route_key(m, r) for m, r, _ in QUEUE_ROUTES} == declared


@pytest.mark.parametrize(("method", "route", "user"), REFUSED)
def test_role_outside_the_group_is_403(everyone: tuple[FlaskClient, dict[str, Headers], Node],
                                       method: str, route: str, user: str) -> None:
    """Each queue route refuses every role outside its group, before reading the body."""
    client, headers, shared = everyone
    before = outbox_mark(shared)
    resp = client.open(route, method=method, json={}, headers=headers[user])
    assert_error(resp, 403, "may not do this")
    assert outbox_mark(shared) == before


@pytest.mark.parametrize(("method", "route", "user"), ALLOWED)
def test_role_inside_the_group_passes(everyone: tuple[FlaskClient, dict[str, Headers], Node],
                                      method: str, route: str, user: str) -> None:
    """Roles of the group get past the role check (an empty body or fake id fails later)."""
    client, headers, shared = everyone
    before = outbox_mark(shared)
    resp = client.open(route, method=method, json={}, headers=headers[user])
    assert resp.status_code in {200, 400, 404}, resp.get_json()
    assert outbox_mark(shared) == before


@pytest.mark.parametrize(("method", "route"), [(m, r) for m, r, _ in QUEUE_ROUTES])
@pytest.mark.parametrize("auth", [None, "Bearer not-a-real-token"], ids=["none", "bad"])
def test_no_or_bad_token_is_401(everyone: tuple[FlaskClient, dict[str, Headers], Node],
                                method: str, route: str, auth: str | None) -> None:
    """Without a valid session every queue route answers 401 asking to log in."""
    client, _, _ = everyone
    headers = {"Authorization": auth} if auth else {}
    assert_error(client.open(route, method=method, json={}, headers=headers), 401, "log")


# --- KPIs ------------------------------------------------------------------------------------

def test_kpis_of_a_scripted_day(client: FlaskClient, op: Headers, rec: Headers, node: Node,
                                clock: FakeClock) -> None:
    """Issued, served, no-shows, transfers, waiting per queue and exact percentiles."""
    nadra, dgip = open_counter(client, op), open_counter(client, op, "Counter 2")
    t1, t2, t3 = (issue_ticket(client, rec) for _ in range(3))
    t4 = issue_ticket(client, rec, [DGIP])
    issue(client, rec, [DGIP], missing=["old_passport"])
    clock.advance(minutes=2)
    assert call_next(client, op, nadra)["id"] == t1["id"]  # type: ignore[index]  # wait 120 s
    clock.advance(minutes=10)
    ok(act(client, op, t1["id"], "complete"))  # 600 s: within the 15-minute standard
    assert call_next(client, op, nadra)["id"] == t2["id"]  # type: ignore[index]  # wait 720 s
    clock.advance(minutes=20)
    ok(act(client, op, t2["id"], "complete"))  # 1200 s: over the standard
    assert call_next(client, op, nadra)["id"] == t3["id"]  # type: ignore[index]  # wait 1920 s
    ok(act(client, op, t3["id"], "no-show"))
    clock.advance(minutes=3)
    assert call_next(client, op, dgip)["id"] == t4["id"]  # type: ignore[index]  # wait 2100 s
    ok(act(client, op, t4["id"], "transfer", {"service_code": NADRA}))
    clock.advance(minutes=5)
    kpis = ok(client.get("/api/kpi", headers=log_in(client, "supervisor")))
    assert kpis["business_date"] == "2026-03-02"
    assert {k: kpis[k] for k in ("issued", "served", "completed_visits", "no_shows",
                                 "transfers", "missing_documents")} == {
        "issued": 4, "served": 2, "completed_visits": 2, "no_shows": 1, "transfers": 1,
        "missing_documents": 1}
    queues = {q["code"]: q for q in kpis["queues"]}
    assert (queues["nadra"]["waiting"], queues["nadra"]["longest_wait_s"]) == (1, 300.0)
    assert (queues["dgip"]["waiting"], queues["dgip"]["longest_wait_s"]) == (0, 0.0)
    assert sum(q["waiting"] for q in kpis["queues"]) == 1
    # Waits of called segments: 120, 720, 1920 (t4's was reset by its transfer).
    assert (kpis["wait_p50_s"], kpis["wait_p90_s"]) == (720.0, 1920.0)
    assert (kpis["service_p50_s"], kpis["service_p90_s"]) == (600.0, 1200.0)
    assert kpis["within_standard_pct"] == 50.0


def test_kpi_snapshot_job_keeps_one_record_per_day(client: FlaskClient, op: Headers,
                                                   rec: Headers, node: Node,
                                                   clock: FakeClock) -> None:
    """The daily job stores the day's KPIs as a synced record, replacing an earlier run."""
    counter = open_counter(client, op)
    issue_ticket(client, rec)
    jobs.snapshot_kpis(node)
    clock.advance(minutes=4)
    call_and_complete(client, op, counter)
    before = outbox_mark(node)
    jobs.snapshot_kpis(node)
    rows = list(node.reader().query("SELECT * FROM kpi_snapshots"))
    assert len(rows) == 1 and rows[0]["business_date"] == "2026-03-02"
    data = json.loads(rows[0]["data"])
    assert (data["issued"], data["served"], data["wait_p50_s"]) == (1, 1, 240.0)
    assert data == kpi.compute(node.reader(), "2026-03-02", clock())
    changes = node.reader().execute("SELECT tbl, op FROM sync_outbox WHERE seq > ?",
                                    [before[1]]).fetchall()
    assert [tuple(c) for c in changes] == [("kpi_snapshots", "update")]


def test_kpis_of_an_empty_day(client: FlaskClient, login: Login) -> None:
    """A day with no tickets has zero counts and no percentiles, not errors."""
    kpis = ok(client.get("/api/kpi?date=2026-01-01", headers=login("auditor")))
    assert (kpis["issued"], kpis["served"], kpis["wait_p50_s"],
            kpis["within_standard_pct"]) == (0, 0, None, None)
