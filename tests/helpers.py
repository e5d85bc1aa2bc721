"""Helpers shared by the tests: waiting for an event, a settable clock, issuing visits,
driving counters."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import requests
from flask.testing import FlaskClient

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.ids import utcnow
from edge_node.node import Node

Headers = dict[str, str]

# A Monday morning in Islamabad (10:00 PKT): far from midnight, so the business day is fixed.
START = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
NADRA = "nadra_snic_renewal"
DGIP = "dgip_passport_renewal"
POLL_INTERVAL_S = 0.05
SCRIPTS_DIR = Path(sys.executable).parent  # where pip put edge-node and edge-hq for this Python


def console_script(name: str) -> str:
    """Path of the `name` console script installed with the Python running the tests.

    Found beside sys.executable, never through VIRTUAL_ENV or PATH: those may name another
    environment (or none) when pytest is run as .venv/bin/pytest.
    """
    return str(SCRIPTS_DIR / name)

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, *,
             stop: Callable[[], str | None] | None = None,
             detail: Callable[[], str] | None = None,
             interval: float = POLL_INTERVAL_S) -> T:
    """Poll `predicate()` until it returns something true, and return that.

    Fails (AssertionError) naming `what` after `timeout` seconds, or at once when `stop()`
    gives a reason (a child process that died, say); `detail()` (a log tail) is appended to
    either message. This is the one way tests wait for an event: never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        reason = stop() if stop is not None else None
        if reason:
            raise AssertionError(f"{reason} while waiting for {what}" + _detail(detail))
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + _detail(detail))
        time.sleep(interval)


def _detail(detail: Callable[[], str] | None) -> str:
    """`detail()` on a line of its own, or nothing."""
    return "\n" + detail() if detail is not None else ""


def exited(proc: Any, name: str = "the process") -> Callable[[], str | None]:
    """A `stop` for `wait_for`: the reason once `proc` (a Popen) has exited, else None."""
    return lambda: None if proc.poll() is None else f"{name} exited with {proc.returncode}"


def health(url: str) -> dict[str, Any] | None:
    """The body of GET `url`/api/health when it answers 200; None while it does not."""
    try:
        resp = requests.get(url + "/api/health", timeout=2)
    except requests.RequestException:
        return None
    body: dict[str, Any] | None = resp.json() if resp.status_code == 200 else None
    return body



class FakeClock:
    """The tests' one clock for `Node(settings, now=clock)`: it moves only when told to.

    `FakeClock()` stands still at START; `FakeClock(start=None)` runs with the real time
    (for screens served to a real browser), shifted by whatever `advance` adds.
    """

    def __init__(self, start: datetime | None = START) -> None:
        """Stand at `start`, or follow the real time when it is None."""
        self.start = start
        self.offset = timedelta()

    def __call__(self) -> datetime:
        """The current (fake) time."""
        return (utcnow() if self.start is None else self.start) + self.offset

    def advance(self, **delta: float) -> datetime:
        """Move by a timedelta given as keywords (minutes=3, seconds=-10...)."""
        self.offset += timedelta(**delta)
        return self()


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


def decide(node: Node, reference: str, status: str, reason: str | None = None
           ) -> dict[str, Any] | None:
    """A back-office decision reaching the node from HQ (the real downstream path, next seq).

    Returns the node's refusal of it (seq, kind, reason, detail), or None when applied.
    """
    from edge_node.replication.downstream import refusals
    from edge_node.replication.port import NodeOutbox

    port = NodeOutbox(node)
    seq = port.down_seq() + 1
    payload = {"reference": reference, "status": status}
    if reason is not None:
        payload["reason"] = reason
    port.apply_down(seq, "decision", payload)
    return next((r for r in refusals(node.reader()) if r["seq"] == seq), None)
