"""Retention at the node: citizen PII and visit detail leave the node once HQ holds them.

What goes, once older than the cutoff (`retention_days`) and acknowledged by HQ:
- collected applications (last changed before the cutoff); others stay until collected;
- visits of business days before the cutoff with their tickets, ticket services,
  ticket events and feedback — unless a ticket of the visit still has an application;
- citizens (their encrypted CNIC, name and phone) last changed before the cutoff that
  no remaining visit or application names.

"Acknowledged" is exact: a row goes only when no outbox record of it (or, for a visit,
of any of its rows) is still waiting for HQ's ack. Exported by USB but not acked means
not acknowledged. A day's KPI snapshot is taken first if the day has none, so the
figures HQ and the supervisor see survive the detail.

Removal is local: the capture triggers record the deletes like any change, and the
purge un-captures them in the same transaction (`sync.changes.discard_since`), so HQ
never hears of them and keeps its copy. Then one audit entry records the counts (no
PII); it is captured and synced as usual.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.domain import audit, kpi
from edge_node.ids import business_date, iso
from sync.changes import discard_since, issued_seq

AUDIT_ACTION = "retention.purge"
VISIT_TABLES = ("feedback", "ticket_events", "ticket_services", "tickets", "visits")
"""Visit detail, in the order it is deleted (children before the rows they reference)."""
COUNTED = ("citizens", "applications", *reversed(VISIT_TABLES))


@dataclass(frozen=True)
class Cutoff:
    """What is old: rows changed before `at`, visits of business days before `day`."""

    days: int
    at: str
    day: str


def cutoff(now: datetime, days: int, timezone: str) -> Cutoff:
    """The cutoff `days` before `now` (the center's business day for visits)."""
    moment = now - timedelta(days=days)
    return Cutoff(days, iso(moment), business_date(moment, timezone))


def _ids(rows: Iterable[Any]) -> list[str]:
    """The first column of each row."""
    return [str(row[0]) for row in rows]


def _pending(db: Database, acked_seq: int) -> dict[str, set[str]]:
    """Per table, the primary keys with an outbox record HQ has not acknowledged."""
    out: dict[str, set[str]] = defaultdict(set)
    for tbl, pk in db.conn.execute(
            "SELECT DISTINCT tbl, pk FROM sync_outbox WHERE seq > ?", [acked_seq]):
        out[tbl].add(pk)
    return out


def _delete(db: Database, table: str, ids: list[str]) -> int:
    """Delete rows by id (table names come from this module, never from input)."""
    if ids:
        db.conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                        [json.dumps(ids)])
    return len(ids)


def _in(db: Database, sql: str, ids: list[str]) -> list[tuple[str, str]]:
    """(id, parent id) rows of `sql`, whose one `?` is the JSON list `ids`."""
    return [(str(a), str(b)) for a, b in db.conn.execute(sql, [json.dumps(ids)])] if ids else []


def _snapshot_missing_days(db: Database, cut: Cutoff, now: str, settings: Settings) -> int:
    """Take the KPI snapshot of each old day that has visits but no snapshot."""
    days = _ids(db.conn.execute(
        "SELECT DISTINCT business_date FROM visits WHERE business_date < ? AND business_date "
        "NOT IN (SELECT business_date FROM kpi_snapshots)", [cut.day]))
    for day in days:
        kpi.store_snapshot(db, day, now, settings)
    return len(days)


def _old_applications(db: Database, cut: Cutoff, pending: dict[str, set[str]]) -> list[str]:
    """Collected applications last changed before the cutoff, known to HQ."""
    return [i for i in _ids(db.conn.execute(
        "SELECT id FROM applications WHERE status = 'collected' AND updated_at < ?", [cut.at]))
        if i not in pending["applications"]]


def _old_visits(db: Database, cut: Cutoff, pending: dict[str, set[str]], limit: int
                ) -> dict[str, list[str]]:
    """Ids per VISIT_TABLES of old visits (the oldest `limit`, -1: all) that hold no
    application and are all at HQ."""
    visits = _ids(db.conn.execute(
        "SELECT id FROM visits WHERE business_date < ? AND id NOT IN (SELECT t.visit_id "
        "FROM applications a JOIN tickets t ON t.id = a.ticket_id) "
        "ORDER BY business_date, id LIMIT ?", [cut.day, limit]))
    owner = {v: v for v in visits}  # row id -> visit id, for every row of these visits
    rows: dict[str, list[tuple[str, str]]] = {"visits": [(v, v) for v in visits]}
    rows["tickets"] = _in(db, "SELECT id, visit_id FROM tickets WHERE visit_id IN "
                              "(SELECT value FROM json_each(?))", visits)
    owner.update({t: owner[v] for t, v in rows["tickets"]})
    tickets = [t for t, _ in rows["tickets"]]
    for table in ("ticket_services", "ticket_events", "feedback"):
        rows[table] = _in(db, f"SELECT id, ticket_id FROM {table} WHERE ticket_id IN "
                              "(SELECT value FROM json_each(?))", tickets)
        owner.update({r: owner[t] for r, t in rows[table]})
    held = {owner[r] for table in VISIT_TABLES for r, _ in rows[table]
            if r in pending[table]}
    return {table: [r for r, parent in rows[table] if owner[parent] not in held]
            for table in VISIT_TABLES}


def _old_citizens(db: Database, cut: Cutoff, pending: dict[str, set[str]]) -> list[str]:
    """Citizens last changed before the cutoff that nothing left on the node names."""
    return [i for i in _ids(db.conn.execute(
        "SELECT id FROM citizens WHERE updated_at < ? "
        "AND id NOT IN (SELECT citizen_id FROM visits WHERE citizen_id IS NOT NULL) "
        "AND id NOT IN (SELECT citizen_id FROM applications WHERE citizen_id IS NOT NULL)",
        [cut.at])) if i not in pending["citizens"]]


def purge(db: Database, cut: Cutoff, acked_seq: int, now: str, settings: Settings,
          visit_limit: int = -1) -> dict[str, int]:
    """Remove what the retention rule allows (writer); counts per table, no PII.

    `acked_seq`: HQ's acknowledged seq as read before this write (it only grows, so an
    older value only keeps more). `visit_limit` bounds one transaction: the oldest that
    many old visits are considered (-1: all). The deletes are un-captured; the audit
    entry is not.
    """
    counts = {"kpi_snapshots_taken": _snapshot_missing_days(db, cut, now, settings)}
    mark = issued_seq(db.conn)
    pending = _pending(db, acked_seq)
    counts["applications"] = _delete(db, "applications", _old_applications(db, cut, pending))
    old_visits = _old_visits(db, cut, pending, visit_limit)
    for table, ids in old_visits.items():
        counts[table] = _delete(db, table, ids)
    counts["citizens"] = _delete(db, "citizens", _old_citizens(db, cut, pending))
    discard_since(db.conn, mark)
    if any(counts[table] for table in COUNTED):
        audit.append(db, None, AUDIT_ACTION, "node", None, now, {
            **counts, "retention_days": cut.days, "before_day": cut.day})
    return counts


class _DryRun(Exception):
    """Carries a dry run's counts out of the savepoint it rolls back."""

    def __init__(self, counts: dict[str, int]) -> None:
        """Keep the counts."""
        super().__init__("dry run")
        self.counts = counts


def preview(db: Database, cut: Cutoff, acked_seq: int, now: str,
            settings: Settings) -> dict[str, int]:
    """What `purge` would remove now, computed by running it and rolling it back."""
    try:
        with db.atomic():
            raise _DryRun(purge(db, cut, acked_seq, now, settings))
    except _DryRun as done:
        return done.counts


@dataclass(frozen=True)
class PiiAge:
    """The citizen data held longest since it was last used."""

    oldest_used_at: str | None
    citizens: int
    past_cutoff: int


def oldest_pii(db: Database, cut_at: str) -> PiiAge:
    """Citizens the purge may take: not named by an open application.

    A citizen's data was last used at its last change, visit or application change;
    `past_cutoff` counts those last used before `cut_at` (what the purge is behind on).
    """
    row = db.execute(
        "WITH used (cid, at) AS (SELECT id, updated_at FROM citizens UNION ALL "
        "SELECT citizen_id, created_at FROM visits WHERE citizen_id IS NOT NULL UNION ALL "
        "SELECT citizen_id, updated_at FROM applications WHERE citizen_id IS NOT NULL), "
        "last AS (SELECT cid, max(at) AS at FROM used WHERE cid IN (SELECT id FROM citizens) "
        "GROUP BY cid) "
        "SELECT min(at), count(*), coalesce(sum(at < ?), 0) FROM last WHERE cid NOT IN "
        "(SELECT citizen_id FROM applications WHERE status != 'collected' "
        "AND citizen_id IS NOT NULL)", [cut_at]).fetchone()
    return PiiAge(row[0], int(row[1]), int(row[2]))
