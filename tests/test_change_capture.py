"""Change capture into the outbox (same transaction, gap-free seq, rising HLC) and the HLC."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlite_utils import Database

from edge_node.domain import counters, queue, visits
from edge_node.ids import new_id
from edge_node.node import Node
from edge_node.store.schema import SYNCED_TABLES
from sync.changes import OPS, iter_changes
from sync.hlc import MAX_COUNTER, MAX_DRIFT_MS, Clock, HLCError, Timestamp
from tests.helpers import NADRA, outbox_mark

NOT_SYNCED = ("node_meta", "queue_numbers", "sessions", "staff_login_state", "staff",
              "services")


class Boom(RuntimeError):
    """Raised by a write function after it has changed rows."""


def outbox(node: Node, after: int = 0) -> list[tuple[int, str, str, str, str]]:
    """(seq, hlc, table, pk, op) of the outbox rows after `after`, in seq order."""
    return [(c.seq, c.hlc, c.table, c.pk, c.op)
            for c in iter_changes(node.reader().conn, after, limit=1_000_000)]


def last_seq(node: Node) -> int:
    """The newest outbox seq (0 when empty)."""
    return outbox_mark(node)[1] or 0


def assert_gap_free(rows: list[tuple[int, str, str, str, str]], first: int) -> None:
    """Seqs run first, first+1, ... and HLCs rise strictly with them."""
    assert [r[0] for r in rows] == list(range(first, first + len(rows)))
    hlcs = [Timestamp.parse(r[1]) for r in rows]
    assert all(a < b for a, b in pairwise(hlcs)), "HLC did not rise"


def triggers(node: Node, table: str) -> set[str]:
    """Names of the triggers on `table`."""
    return {r[0] for r in node.reader().execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", [table])}


def actor_of(node: Node, username: str = "reception") -> dict[str, Any]:
    """A staff member as the API passes it (id and role)."""
    return dict(next(node.reader().query("SELECT id, role FROM staff WHERE username = ?",
                                         [username])))


def new_visit(node: Node, db: Database) -> dict[str, Any]:
    """Register a one-service visit (inside the writer)."""
    return visits.create_visit(db, services=[NADRA], priority="normal", citizen_id=None,
                               missing_documents=[], actor=actor_of(node), now=node.timestamp(),
                               day=node.today())


def placeholder_row(db: Database, table: str) -> dict[str, Any]:
    """Values for the NOT NULL columns of any table (foreign keys are deferred by the caller)."""
    unique = {info[2] for index in db.execute(f"PRAGMA index_list({table})").fetchall()
              if index[2] for info in db.execute(f"PRAGMA index_info({index[1]})").fetchall()}
    row: dict[str, Any] = {}
    for col in db.table(table).columns:
        if not (col.notnull or col.is_pk) or (col.default_value is not None and not col.is_pk):
            continue
        if "INT" in col.type.upper():
            row[col.name] = 10**9 if col.name in unique else 3  # 3 passes CHECK (1..5)
        else:
            row[col.name] = f"{col.name}-{new_id()}"
    return row


# --- capture ---------------------------------------------------------------------------------

@pytest.mark.parametrize("table", SYNCED_TABLES)
def test_every_synced_table_is_captured(node: Node, table: str) -> None:
    """Insert, update and delete each append one outbox row, in order, naming table and key."""
    start = last_seq(node)

    def write(db: Database) -> dict[str, Any]:
        db.execute("PRAGMA defer_foreign_keys = ON")  # placeholder rows reference nothing
        row = placeholder_row(db, table)
        db.table(table).insert(row)
        db.execute(f"UPDATE {table} SET id = id WHERE id = ?", [row["id"]])
        db.execute(f"DELETE FROM {table} WHERE id = ?", [row["id"]])
        return row

    assert triggers(node, table) == {f"capture_{table}_{op}" for op in OPS}
    row = node.write(write)
    rows = outbox(node, start)
    assert [(r[2], r[3], r[4]) for r in rows] == [
        (table, row["id"], "insert"), (table, row["id"], "update"), (table, row["id"], "delete")]
    assert_gap_free(rows, start + 1)
    inserted = next(iter_changes(node.reader().conn, start, 1))
    assert inserted.data is not None and {k: inserted.data[k] for k in row} == row


@pytest.mark.parametrize("table", NOT_SYNCED)
def test_local_tables_are_not_captured(node: Node, table: str) -> None:
    """Sessions, counters of numbers, node metadata and HQ-owned tables stay out of the outbox."""
    assert triggers(node, table) == set()
    before = outbox_mark(node)
    node.write(lambda db: db.execute(f"UPDATE {table} SET rowid = rowid"))
    assert outbox_mark(node) == before


def test_a_workflow_is_captured_in_order(node: Node) -> None:
    """A visit, its call and its completion: every row created has its insert record."""
    start = last_seq(node)
    op = actor_of(node, "operator")
    counter = next(node.reader().query("SELECT id FROM counters WHERE name = 'Counter 1'"))["id"]
    tables = ("visits", "tickets", "ticket_services", "ticket_events", "audit_log")
    ids_before = {t: {r[0] for r in node.reader().execute(f"SELECT id FROM {t}")}
                  for t in tables}

    def day(db: Database) -> str:
        ticket = new_visit(node, db)["ticket"]
        counters.set_state(db, counter, "open", op, node.timestamp())
        queue.call_next(db, counter, op, node.timestamp(), 2)
        queue.complete(db, ticket["id"], op, node.timestamp())
        return str(ticket["id"])

    ticket_id = node.write(day)
    rows = outbox(node, start)
    assert_gap_free(rows, start + 1)
    for table in tables:
        created = {r[0] for r in node.reader().execute(f"SELECT id FROM {table}")}
        inserted = {r[3] for r in rows if r[2] == table and r[4] == "insert"}
        assert inserted == created - ids_before[table] and inserted, table
    updated = {(r[2], r[3]) for r in rows if r[4] == "update"}
    assert {("tickets", ticket_id), ("counters", counter)} <= updated


def test_failed_write_leaves_no_outbox_row_and_no_gap(node: Node) -> None:
    """A write function that raises after changing rows rolls back its outbox rows and seq."""
    start = last_seq(node)
    visits_before = node.reader().execute("SELECT count(*) FROM visits").fetchone()[0]

    def failing(db: Database) -> None:
        new_visit(node, db)
        raise Boom("after the rows were written")

    with pytest.raises(Boom):
        node.write(failing)
    assert last_seq(node) == start
    assert node.reader().execute("SELECT count(*) FROM visits").fetchone()[0] == visits_before
    node.write(lambda db: new_visit(node, db))
    rows = outbox(node, start)
    assert rows and rows[0][0] == start + 1
    assert_gap_free(rows, start + 1)


def test_failures_inside_a_group_commit_leave_no_gap(node: Node) -> None:
    """Jobs committed together, some failing: only the good ones are captured, seq gap-free."""
    start, gate = last_seq(node), threading.Event()
    first = node.writer.submit(lambda db: gate.wait(10))
    jobs: list[tuple[bool, Future[Any]]] = []
    for i in range(12):
        fails = i % 3 == 1

        def job(db: Database, fails: bool = fails) -> dict[str, Any]:
            result = new_visit(node, db)
            if fails:
                raise Boom("in the middle of a group")
            return result

        jobs.append((fails, node.writer.submit(job)))
    batches = node.writer.batches
    gate.set()
    first.result(10)
    good = []
    for fails, future in jobs:
        if fails:
            with pytest.raises(Boom):
                future.result(10)
        else:
            good.append(future.result(10)["visit"]["id"])
    assert node.writer.batches - batches <= 2, "the queued jobs were not group-committed"
    rows = outbox(node, start)
    assert_gap_free(rows, start + 1)
    captured = [r[3] for r in rows if r[2] == "visits" and r[4] == "insert"]
    assert captured == good


def test_concurrent_writes_give_a_gap_free_seq(node: Node) -> None:
    """Threads writing at once: every change captured once, seq contiguous, HLC rising."""
    start, errors, made = last_seq(node), [], []

    def worker() -> None:
        try:
            for _ in range(5):
                made.append(node.write(lambda db: new_visit(node, db))["visit"]["id"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = outbox(node, start)
    assert_gap_free(rows, start + 1)
    captured = [r[3] for r in rows if r[2] == "visits" and r[4] == "insert"]
    assert sorted(captured) == sorted(made) and len(set(captured)) == 40


# --- the hybrid logical clock ----------------------------------------------------------------

class Wall:
    """A settable wall clock in milliseconds."""

    def __init__(self, ms: int) -> None:
        """Start at `ms`."""
        self.ms = ms

    def __call__(self) -> int:
        """The current reading."""
        return self.ms


@pytest.fixture
def wall() -> Wall:
    """A wall clock at a fixed moment."""
    return Wall(1_760_000_000_000)


@pytest.fixture
def clock(wall: Wall) -> Iterator[Clock]:
    """An HLC of node N1 over the settable wall clock."""
    yield Clock("N1", wall=wall)


def test_hlc_is_monotonic_when_the_wall_clock_goes_back(clock: Clock, wall: Wall) -> None:
    """Readings rise strictly even when the wall clock stands still or jumps backwards."""
    readings = []
    for step in [0, 0, -5_000, -1, 0, 10_000, -60_000, 1]:
        wall.ms += step
        readings.append(clock.now())
    assert all(a < b for a, b in pairwise(readings))
    assert [str(a) < str(b) for a, b in pairwise(readings)] == [True] * 7
    assert readings[2].wall_ms == 1_760_000_000_000 and readings[2].counter == 2


def test_hlc_follows_the_wall_clock_when_it_moves_on(clock: Clock, wall: Wall) -> None:
    """A later wall time resets the logical counter."""
    clock.now()
    clock.now()
    wall.ms += 7
    assert clock.now() == Timestamp(wall.ms, 0, "N1")


def test_hlc_counter_overflow_borrows_a_millisecond(clock: Clock, wall: Wall) -> None:
    """When the counter is full the clock moves one millisecond ahead."""
    clock.observe(Timestamp(wall.ms, MAX_COUNTER, "N2"))
    assert clock.now() == Timestamp(wall.ms + 1, 0, "N1")


@pytest.mark.parametrize(("remote_ahead_ms", "remote_counter", "expected"), [
    (60_000, 4, (60_000, 5)),  # remote ahead: adopt its time, count past it
    (0, 9, (0, 10)),  # same millisecond: count past the larger counter
    (-60_000, 50, (0, 0)),  # remote behind: local time wins
])
def test_hlc_observe(clock: Clock, wall: Wall, remote_ahead_ms: int, remote_counter: int,
                     expected: tuple[int, int]) -> None:
    """After observing a remote timestamp the next reading is greater than it."""
    remote = Timestamp(wall.ms + remote_ahead_ms, remote_counter, "N2")
    clock.observe(str(remote))
    reading = clock.now()
    assert (reading.wall_ms - wall.ms, reading.counter) == expected
    assert reading > remote


def test_hlc_refuses_a_remote_far_in_the_future(clock: Clock, wall: Wall) -> None:
    """A timestamp more than MAX_DRIFT_MS ahead is refused and does not move the clock."""
    before = clock.now()
    with pytest.raises(HLCError, match="more than a day ahead"):
        clock.observe(Timestamp(wall.ms + MAX_DRIFT_MS + 1, 0, "N2"))
    assert clock.now() == Timestamp(before.wall_ms, before.counter + 1, "N1")
    clock.observe(Timestamp(wall.ms + MAX_DRIFT_MS, 0, "N2"))  # right at the limit: accepted
    assert clock.now().wall_ms == wall.ms + MAX_DRIFT_MS


def test_hlc_readings_are_unique_across_threads(clock: Clock) -> None:
    """Concurrent callers never get the same timestamp."""
    seen: list[Timestamp] = []

    def take() -> None:
        seen.extend(clock.now() for _ in range(500))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2000


node_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
stamps = st.builds(Timestamp, st.integers(0, 10**15 - 1), st.integers(0, MAX_COUNTER), node_ids)


@given(stamps, stamps)
def test_hlc_text_round_trips_and_sorts_like_the_tuple(a: Timestamp, b: Timestamp) -> None:
    """format -> parse gives the same timestamp; string order equals timestamp order."""
    assert Timestamp.parse(str(a)) == a
    if a.node_id == b.node_id or (a.wall_ms, a.counter) != (b.wall_ms, b.counter):
        assert (str(a) < str(b)) == (a < b)


@pytest.mark.parametrize("text", [
    "", "abc", "1-2-N1", "00000000000100-00000-N1", "0000000000001000-00000-N1",
    "000000000001000-0000-N1", "000000000001000-00000-", "000000000001000-00000-N 1",
    "000000000001000-00000-N1/x", "000000000001000-00000-" + "N" * 65,
    " 000000000001000-00000-N1", "-00000000000100-00000-N1",
])
def test_hlc_parse_refuses_malformed_text(text: str) -> None:
    """Anything but `<15 digits>-<5 digits>-<node id>` is an HLCError."""
    with pytest.raises(HLCError, match="malformed HLC timestamp"):
        Timestamp.parse(text)


def test_hlc_parse_refuses_a_trailing_newline() -> None:
    """A trailing newline is not part of a timestamp (it would not round-trip)."""
    with pytest.raises(HLCError):
        Timestamp.parse("000000000001000-00000-N1\n")
