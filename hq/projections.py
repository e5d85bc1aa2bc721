"""Typed projections of HQ's merge state: one real, indexed table per synced node table.

`hq_records` (tbl, pk → merge state and visible row as JSON) is the
replication truth. Every record applied there is projected, in the same
transaction, into `hq_<table>`: the node table's own columns, typed (INTEGER
columns as BIGINT, everything else TEXT as it arrives — PII fields are the
ciphertext under HQ's field key (hq/pii.py), and `hq_citizens.cnic_index` is
HQ's fleet index of the CNIC; JSON lists stay JSON text), plus `center_id`
and `node_id` (the node that created the row, and its center) and
`updated_hlc` (the newest clock of the merge state). A row deleted in the merge
state leaves its projection. `hq_citizens.person_id` links registrations of one
person made at different nodes: every citizen row with the same fleet index
shares the smallest id among them (UUIDv7: the first registration), a row
without an index is its own person; it is kept with every apply and rebuild.
`rebuild` recreates every projection from the merge state and gives the same
rows as the record-by-record path.

HQ imports nothing from the node package, so the columns are listed here;
tests/test_hq_projections.py checks them against the node's schema.
A value that does not fit its column (text in an integer column, an object in a
text column) is projected as NULL or as JSON text; the merge state keeps it as sent.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hq import pii
from hq.dbapi import Tx

ColumnType = Literal["text", "int"]
EXTRA = ("center_id", "node_id", "updated_hlc")
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
INTEGER_TEXT = re.compile(r"^-?[0-9]{1,19}$")
REBUILD_PAGE = 2000
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Projection:
    """One projected table: its name at HQ, typed columns (besides `id`) and indexes."""

    source: str
    columns: tuple[tuple[str, ColumnType], ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    derived: tuple[str, ...] = ()
    """HQ's own TEXT columns, computed at HQ after the row is written (not in `names`)."""

    @property
    def table(self) -> str:
        """The projection's table name at HQ."""
        return f"hq_{self.source}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every column in storage order: id, the node's columns, then center, node, clock."""
        return ("id", *(name for name, _ in self.columns), *EXTRA)


def _text(*names: str) -> tuple[tuple[str, ColumnType], ...]:
    """TEXT columns."""
    return tuple((name, "text") for name in names)


def _int(*names: str) -> tuple[tuple[str, ColumnType], ...]:
    """BIGINT columns."""
    return tuple((name, "int") for name in names)


PROJECTIONS: dict[str, Projection] = {p.source: p for p in (
    Projection("citizens", _text("cnic_index", "cnic_enc", "name_enc", "phone_enc", "id_kind",
                                 "created_at", "updated_at", "field_hlc"),
               (("cnic_index",), ("person_id",)), derived=("person_id",)),
    Projection("visits", _text("citizen_id", "business_date", "priority", "status", "services",
                               "missing_documents", "created_by", "created_at", "closed_at"),
               (("citizen_id",), ("center_id", "business_date"))),
    Projection("tickets", (*_text("visit_id", "number", "queue_prefix"), *_int("daily_number"),
                           *_text("business_date", "priority"), *_int("priority_weight"),
                           *_text("status", "queue_code", "service_code", "counter_id",
                                  "staff_id", "target_counter_id", "enqueued_at"),
                           *_int("order_key"), *_text("called_at"), *_int("recall_count"),
                           *_text("rejoin_until", "hold_reason", "issued_at", "updated_at",
                                  "completed_at")),
               (("center_id", "business_date", "status"), ("visit_id",))),
    Projection("ticket_services", (*_text("ticket_id"), *_int("position"),
                                   *_text("service_code", "queue_code", "status", "enqueued_at",
                                          "called_at", "completed_at", "counter_id",
                                          "staff_id")),
               (("ticket_id",),)),
    Projection("ticket_events", _text("ticket_id", "event", "service_code", "queue_code",
                                      "counter_id", "staff_id", "at", "detail"),
               (("ticket_id",),)),
    Projection("counters", (*_text("name", "services", "state", "pause_reason", "staff_id"),
                            *_int("priority_streak"), *_text("updated_at")),
               (("center_id",),)),
    Projection("applications", _text("reference", "ticket_id", "citizen_id", "service_code",
                                     "agency_code", "agency_reference", "fee_reference",
                                     "documents_seen", "status", "status_hlc", "created_by",
                                     "created_at", "updated_at", "notes", "decision_reason",
                                     "decided_at"),
               (("agency_code", "status", "created_at"), ("citizen_id",),
                ("center_id", "created_at"), ("reference",))),
    Projection("feedback", (*_text("ticket_id"), *_int("rating"),
                            *_text("comment", "service_code", "counter_id", "staff_id",
                                   "created_at")),
               (("center_id", "created_at"),)),
    Projection("volunteers", (*_text("name", "phone_enc", "skills"), *_int("active"),
                              *_text("created_at", "updated_at")),
               (("center_id",),)),
    Projection("volunteer_shifts", (*_text("volunteer_id", "business_date", "planned_start",
                                           "planned_end", "assignment", "checked_in_at",
                                           "checked_out_at"), *_int("assists"),
                                    *_text("created_at")),
               (("center_id", "business_date"), ("volunteer_id",))),
    Projection("audit_log", (*_int("seq"), *_text("at", "actor_id", "actor_role", "action",
                                                  "entity", "entity_id", "detail",
                                                  "prev_hash", "hash")),
               (("node_id", "seq"), ("entity", "entity_id"))),
    Projection("kpi_snapshots", _text("business_date", "data", "created_at"),
               (("center_id", "business_date"),)),
)}


def _q(name: str) -> str:
    """A quoted identifier (several node columns are SQL keywords: position, at, …)."""
    return f'"{name}"'


def ddl() -> list[str]:
    """CREATE TABLE and CREATE INDEX statements of every projection."""
    out: list[str] = []
    for p in PROJECTIONS.values():
        cols = ", ".join([*(f"{_q(name)} {'BIGINT' if kind == 'int' else 'TEXT'}"
                            for name, kind in p.columns), *(f"{_q(name)} TEXT"
                                                            for name in p.derived)])
        out.append(f"CREATE TABLE IF NOT EXISTS {p.table} (id TEXT PRIMARY KEY, {cols}, "
                   "center_id TEXT NOT NULL, node_id TEXT NOT NULL, updated_hlc TEXT NOT NULL)")
        for columns in p.indexes:
            name = f"{p.table}_{'_'.join(columns)}"
            out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {p.table} "
                       f"({', '.join(_q(c) for c in columns)})")
    return out


def _as_int(value: Any) -> int | None:
    """An integer column's value, or None when the value is no integer."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and INTEGER_TEXT.match(value):
        value = int(value)
    return value if isinstance(value, int) and INT_MIN <= value <= INT_MAX else None


def _as_text(value: Any) -> str | None:
    """A text column's value: strings as sent (NUL, which PostgreSQL refuses, as U+FFFD)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           ensure_ascii=False)
    return text.replace("\x00", "\ufffd")


def values(p: Projection, pk: str, origin: str, center_id: str, row: Mapping[str, Any],
           hlc: str) -> tuple[Any, ...]:
    """The projection row of one visible record, in `p.names` order."""
    typed = tuple(_as_int(row.get(name)) if kind == "int" else _as_text(row.get(name))
                  for name, kind in p.columns)
    return (pk, *typed, center_id, origin, hlc)


@functools.cache
def upsert_sql(p: Projection) -> str:
    """INSERT of one projection row that replaces the row already there."""
    names = p.names
    updates = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in names[1:])
    return (f"INSERT INTO {p.table} ({', '.join(_q(n) for n in names)}) VALUES "
            f"({', '.join('?' for _ in names)}) ON CONFLICT (id) DO UPDATE SET {updates}")


def project(tx: Tx, tbl: str, pk: str, origin: str, row: Mapping[str, Any] | None,
            hlc: str) -> None:
    """Bring one record's projection in line with its merge state (caller's transaction).

    `row` is the visible row (None once deleted), `origin` the node that created it
    and `hlc` the newest clock of its state, as stored in hq_records.
    """
    p = PROJECTIONS.get(tbl)
    if p is None:
        return
    before = _person_index(tx, pk) if p.derived else None
    if row is None:
        tx.execute(f"DELETE FROM {p.table} WHERE id = ?", [pk])
    else:
        found = tx.execute("SELECT center_id FROM hq_nodes WHERE node_id = ?",
                           [origin]).fetchone()
        tx.execute(upsert_sql(p), values(p, pk, origin, found[0] if found else "",
                                         pii.project_row(tx, tbl, row), hlc))
    if p.derived:  # the person link (hq_citizens, the only projection with one)
        link_persons(tx, pk, [before, _person_index(tx, pk)])


def _person_index(tx: Tx, pk: str) -> str | None:
    """The fleet index HQ holds for one citizen row (None: no row, or no index)."""
    found = tx.execute("SELECT cnic_index FROM hq_citizens WHERE id = ?", [pk]).fetchone()
    return found[0] if found else None


def link_persons(tx: Tx, pk: str | None, indexes: list[str | None]) -> None:
    """Give the citizens of each fleet index in `indexes` one person: the smallest id among
    them; a row without an index (`pk`, or every such row when `pk` is None) is its own."""
    for index in sorted({i for i in indexes if i}):
        tx.execute("UPDATE hq_citizens SET person_id = (SELECT min(c.id) FROM hq_citizens c "
                   "WHERE c.cnic_index = ?) WHERE cnic_index = ?", [index, index])
    if pk is None:
        tx.execute("UPDATE hq_citizens SET person_id = COALESCE((SELECT min(c.id) FROM "
                   "hq_citizens c WHERE c.cnic_index = hq_citizens.cnic_index), id)")
    else:
        tx.execute("UPDATE hq_citizens SET person_id = id WHERE id = ? AND cnic_index IS NULL",
                   [pk])


def _pages(tx: Tx, tbl: str) -> Iterator[list[Any]]:
    """Visible merge-state rows of one table with their center, in pages ordered by pk."""
    last = ""
    while True:
        rows = tx.execute(
            "SELECT r.pk, r.origin, COALESCE(n.center_id, ''), r.row_json, r.hlc "
            "FROM hq_records r LEFT JOIN hq_nodes n ON n.node_id = r.origin "
            "WHERE r.tbl = ? AND r.pk > ? AND r.row_json IS NOT NULL ORDER BY r.pk LIMIT ?",
            [tbl, last, REBUILD_PAGE]).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def rebuild(tx: Tx, tables: list[str] | None = None,
            progress: Progress | None = None) -> dict[str, int]:
    """Empty and refill projections from the merge state (caller's transaction).

    Returns the rows projected per table; `progress(table, done, total)` after each page.
    """
    if tx.dialect == "postgresql":  # writers wait; readers go on seeing the old rows
        tx.execute("LOCK TABLE hq_records IN SHARE MODE")
    counts: dict[str, int] = {}
    for name in tables or list(PROJECTIONS):
        p = PROJECTIONS[name]
        total = int(tx.execute("SELECT count(*) FROM hq_records WHERE tbl = ? AND row_json "
                               "IS NOT NULL", [name]).fetchone()[0])
        tx.execute(f"DELETE FROM {p.table}")
        done = 0
        if progress:
            progress(name, done, total)
        for page in _pages(tx, name):
            tx.executemany(upsert_sql(p), [
                values(p, pk, origin, center, pii.project_row(tx, name, json.loads(text)), hlc)
                for pk, origin, center, text, hlc in page])
            done += len(page)
            if progress:
                progress(name, done, total)
        counts[name] = done
        if p.derived:
            link_persons(tx, None, [])
    return counts
