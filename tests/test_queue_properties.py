"""Queue invariants under random operator sequences (hypothesis state machine, real DB)."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from hypothesis.stateful import run_state_machine_as_test as run_machine
from sqlite_utils import Database

from edge_node.config import load_settings
from edge_node.domain import counters, queue, visits
from edge_node.errors import EdgeError
from edge_node.node import Node
from edge_node.service import jobs
from tests.helpers import DGIP, NADRA, FakeClock, outbox_mark

T = TypeVar("T")
SERVICES = (NADRA, "nadra_new_snic", DGIP, "police_character_certificate")
PRIORITIES = ("normal", "normal", "elderly", "disabled", "women_infant")
COUNTERS = ("Counter 1", "Counter 2", "Counter 3", "Mixed")
STATUSES = {"waiting", "called", "held", "no_show", "done", "expired"}
SEGMENT_OF = {"waiting": "waiting", "called": "serving", "held": "serving", "no_show": "no_show"}
picks = st.integers(min_value=0, max_value=10_000)


class QueueMachine(RuleBasedStateMachine):
    """Random reception, counter and operator actions against one fresh node per example."""

    template: Path

    def __init__(self) -> None:
        """Copy the demo node, add a counter serving two queues, open every counter."""
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="queue-machine-"))
        shutil.copytree(self.template, self.dir / "node")
        self.clock = FakeClock()
        self.node = Node(load_settings(str(self.dir / "node"), environ={}), now=self.clock)
        db = self.node.reader()
        self.operator = self._actor(db, "operator")
        self.reception = self._actor(db, "reception")
        self.node.write(lambda w: counters.create_counter(
            w, "Mixed", [NADRA, DGIP], self.node.timestamp(), self.operator))
        self.counters = {r["name"]: r["id"] for r in db.query(
            "SELECT id, name FROM counters WHERE name IN (?, ?, ?, ?)", COUNTERS)}
        for counter in self.counters.values():
            self._open(counter)
        self.tickets: list[str] = []
        self.entered: dict[str, int] = {}  # ticket -> when it last entered a queue (model)
        self.disturbed: set[str] = set()  # transferred or no-showed at least once
        self.done: dict[str, str] = {}  # completed segment -> completed_at
        self.entries = 0

    def _open(self, counter: str) -> None:
        """Open one counter."""
        now = self.node.timestamp()
        self.node.write(lambda db: counters.set_state(db, counter, "open", self.operator, now))

    @staticmethod
    def _actor(db: Database, username: str) -> dict[str, Any]:
        """The staff member acting (id and role only, as the API passes it)."""
        return dict(next(db.query("SELECT id, role FROM staff WHERE username = ?", [username])))

    def teardown(self) -> None:
        """Close the node and delete its directory."""
        self.node.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _try(self, fn: Callable[[Database], T]) -> T | None:
        """Run a domain function in the writer; a refused action must write nothing."""
        before = outbox_mark(self.node)
        try:
            return self.node.write(fn)
        except EdgeError:
            assert outbox_mark(self.node) == before, "a refused action wrote to the outbox"
            return None

    def _enter(self, ticket_id: str) -> None:
        """Note that a ticket joined a queue now."""
        self.entries += 1
        self.entered[ticket_id] = self.entries

    def _ticket(self, pick: int) -> str:
        """Some ticket issued so far."""
        return self.tickets[pick % len(self.tickets)]

    # --- actions ---------------------------------------------------------------------------

    @rule(services=st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True),
          priority=st.sampled_from(PRIORITIES), missing=st.integers(0, 9))
    def issue(self, services: list[str], priority: str, missing: int) -> None:
        """Reception registers a visit (one in ten lacks a document)."""
        now, day = self.node.timestamp(), self.node.today()
        result = self.node.write(lambda db: visits.create_visit(
            db, services=services, priority=priority, citizen_id=None,
            missing_documents=["cnic_copy"] if missing == 0 else [], actor=self.reception,
            now=now, day=day))
        if result["ticket"] is not None:
            self.tickets.append(result["ticket"]["id"])
            self._enter(result["ticket"]["id"])

    @rule(name=st.sampled_from(COUNTERS))
    def call_next(self, name: str) -> None:
        """Call the next ticket; nobody of its class who queued earlier may be passed over."""
        counter, now = self.counters[name], self.node.timestamp()
        ratio = self.node.settings["priority_ratio"]
        called = self._try(lambda db: queue.call_next(db, counter, self.operator, now, ratio))
        if called is None:
            return
        db = self.node.reader()
        serves = set(counters.get_counter(db, counter)["services"])
        for other in db.query("SELECT id, number, service_code FROM tickets WHERE status = "
                              "'waiting' AND priority_weight = ?", [called["priority_weight"]]):
            if {other["id"], called["id"]} & self.disturbed or other["service_code"] not in serves:
                continue
            assert self.entered[other["id"]] > self.entered[called["id"]], (
                f"{called['number']} was called before {other['number']}, who queued earlier")

    @precondition(lambda self: self.tickets)
    @rule(pick=picks)
    def recall(self, pick: int) -> None:
        """Announce a ticket again."""
        ticket, now = self._ticket(pick), self.node.timestamp()
        self._try(lambda db: queue.recall(db, ticket, self.operator, now))

    @precondition(lambda self: self.tickets)
    @rule(pick=picks)
    def no_show(self, pick: int) -> None:
        """The called citizen is not there."""
        ticket, now = self._ticket(pick), self.clock()
        grace = self.node.settings["no_show_grace_minutes"]
        if self._try(lambda db: queue.no_show(db, ticket, self.operator, now, grace)):
            self.disturbed.add(ticket)

    @precondition(lambda self: self.tickets)
    @rule(pick=picks)
    def rejoin(self, pick: int) -> None:
        """A no-show citizen comes back."""
        ticket, now = self._ticket(pick), self.clock()
        self._try(lambda db: queue.rejoin(db, ticket, self.reception, now))

    @rule(minutes=st.integers(0, 8))
    def time_passes(self, minutes: int) -> None:
        """The clock moves and the expiry job runs."""
        self.clock.advance(minutes=minutes)
        jobs.expire_no_shows(self.node)

    @precondition(lambda self: self.tickets)
    @rule(pick=picks)
    def hold(self, pick: int) -> None:
        """Park a called ticket."""
        ticket, now = self._ticket(pick), self.node.timestamp()
        self._try(lambda db: queue.hold(db, ticket, "fetching a copy", self.operator, now))

    @precondition(lambda self: self.tickets)
    @rule(pick=picks)
    def resume(self, pick: int) -> None:
        """Bring a held ticket back."""
        ticket, now = self._ticket(pick), self.node.timestamp()
        self._try(lambda db: queue.resume(db, ticket, self.operator, now))

    @precondition(lambda self: self.tickets)
    @rule(pick=picks, service=st.none() | st.sampled_from(SERVICES),
          name=st.none() | st.sampled_from(COUNTERS))
    def transfer(self, pick: int, service: str | None, name: str | None) -> None:
        """Send a ticket to another queue and/or counter."""
        ticket, now = self._ticket(pick), self.node.timestamp()
        counter = self.counters[name] if name else None
        if self._try(lambda db: queue.transfer(db, ticket, self.operator, now, service,
                                               counter)):
            self.disturbed.add(ticket)

    @precondition(lambda self: self.tickets)
    @rule(pick=picks)
    def complete(self, pick: int) -> None:
        """Finish the current service of a ticket."""
        ticket, now = self._ticket(pick), self.node.timestamp()
        result = self._try(lambda db: queue.complete(db, ticket, self.operator, now))
        if result is None:
            return
        if result["status"] == "waiting":
            self._enter(ticket)
        for seg in self.node.reader().query(
                "SELECT id, completed_at FROM ticket_services WHERE ticket_id = ? AND "
                "status = 'done'", [ticket]):
            self.done.setdefault(seg["id"], seg["completed_at"])

    @rule(name=st.sampled_from(COUNTERS), state=st.sampled_from(counters.STATES),
          reason=st.none() | st.sampled_from(counters.PAUSE_REASONS))
    def counter_state(self, name: str, state: str, reason: str | None) -> None:
        """Open, pause or close a counter."""
        counter, now = self.counters[name], self.node.timestamp()
        self._try(lambda db: counters.set_state(db, counter, state, self.operator, now, reason))

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def every_ticket_is_somewhere(self) -> None:
        """Each ticket is in exactly one known state, with exactly one current segment."""
        db = self.node.reader()
        tickets = list(db.query("SELECT * FROM tickets"))
        assert len(tickets) == len(self.tickets), "a ticket appeared or vanished"
        for t in tickets:
            assert t["status"] in STATUSES, t["status"]
            segs = list(db.query("SELECT * FROM ticket_services WHERE ticket_id = ? "
                                 "ORDER BY position", [t["id"]]))
            states = [s["status"] for s in segs]
            if t["status"] == "done":
                assert set(states) == {"done"}, (t["number"], states)
                continue
            current = [s for s in segs if s["status"] not in ("done", "pending")]
            assert len(current) == 1, (t["number"], t["status"], states)
            seg, at = current[0], segs.index(current[0])
            assert set(states[:at]) <= {"done"} and set(states[at + 1:]) <= {"pending"}, states
            want = "no_show" if t["status"] == "expired" else SEGMENT_OF[t["status"]]
            assert seg["status"] == want, (t["number"], t["status"], seg["status"])
            assert seg["service_code"] == t["service_code"], t["number"]
            if t["status"] in ("called", "held"):
                assert t["counter_id"] is not None and seg["counter_id"] == t["counter_id"]

    @invariant()
    def nobody_is_served_twice(self) -> None:
        """One called ticket per counter; done segments stay done; no service twice a ticket."""
        db = self.node.reader()
        per_counter = db.execute("SELECT counter_id, count(*) FROM tickets WHERE status = "
                                 "'called' GROUP BY counter_id HAVING count(*) > 1").fetchall()
        assert not per_counter, per_counter
        for seg_id, completed_at in self.done.items():
            row = db.execute("SELECT status, completed_at FROM ticket_services WHERE id = ?",
                             [seg_id]).fetchone()
            assert tuple(row) == ("done", completed_at), "a completed service was reopened"
        twice = db.execute("SELECT ticket_id, service_code FROM ticket_services "
                           "GROUP BY ticket_id, service_code HAVING count(*) > 1").fetchall()
        assert not twice, f"a ticket holds the same service twice: {twice}"

    @invariant()
    def numbers_are_unique_per_queue_and_day(self) -> None:
        """Numbers of a prefix and day run 1..n without repeats, printed as `A-007`."""
        db = self.node.reader()
        numbers: dict[tuple[str, str], list[int]] = {}
        for t in db.query("SELECT number, queue_prefix, business_date, daily_number "
                          "FROM tickets"):
            assert t["number"] == f"{t['queue_prefix']}-{t['daily_number']:03d}"
            numbers.setdefault((t["queue_prefix"], t["business_date"]), []).append(
                t["daily_number"])
        for key, seen in numbers.items():
            assert sorted(seen) == list(range(1, len(seen) + 1)), (key, Counter(seen))


def test_queue_invariants(template_dir: Path) -> None:
    """No ticket is served twice or lost, class order is kept, numbers are unique."""
    machine = type("Machine", (QueueMachine,), {"template": template_dir})
    run_machine(machine, settings=settings(
        max_examples=50, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
