"""Reception: a visit for one or several services, and the ticket that queues it.

A ticket is numbered per queue and business day (`A-017`, the prefix of the
first service's agency). It waits in the queue of its current service; when
a service completes it moves to the next one with its number unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit, epoch
from edge_node.domain.catalog import get_service, priority_weight
from edge_node.errors import NotFoundError, ValidationError
from edge_node.ids import new_id
from edge_node.store import meta, sql

MAX_SERVICES_PER_VISIT = 8


def next_number(db: Database, queue_code: str, day: str) -> int:
    """Next daily ticket number of a queue on a day (called in the writer).

    On a restored node, for days up to the restore, in the restore epoch's own
    sequence (edge_node/domain/epoch.py): never a number issued before the backup.
    """
    restore_epoch = epoch.for_day(db, day)
    row = db.conn.execute(
        "INSERT INTO queue_numbers (queue_code, business_date, last_number) VALUES (?, ?, 1) "
        "ON CONFLICT (queue_code, business_date) DO UPDATE SET last_number = last_number + 1 "
        "RETURNING last_number", [epoch.counter_key(queue_code, restore_epoch), day]).fetchone()
    return restore_epoch * epoch.EPOCH_SPAN + int(row[0])


def next_order_key(db: Database) -> int:
    """A strictly increasing key that orders tickets by entry into a queue."""
    return meta.next_counter(db, meta.ORDER_COUNTER_KEY)


def _check_services(db: Database, codes: list[str]) -> list[dict[str, Any]]:
    """Resolve service codes, refusing duplicates and unknown codes."""
    if len(set(codes)) != len(codes):
        raise ValidationError("services: a service is listed twice")
    return [get_service(db, code) for code in codes]


def _check_citizen(db: Database, citizen_id: str | None) -> None:
    """A named citizen must exist."""
    if citizen_id and not db.execute("SELECT 1 FROM citizens WHERE id = ?",
                                     [citizen_id]).fetchone():
        raise NotFoundError(f"unknown citizen: {citizen_id}")


def create_visit(db: Database, *, services: list[str], priority: str,
                 citizen_id: str | None, missing_documents: list[str],
                 actor: dict[str, Any], now: str, day: str) -> dict[str, Any]:
    """Record a visit; issue its ticket unless documents are missing (writer)."""
    resolved = _check_services(db, services)
    weight = priority_weight(db, priority)
    _check_citizen(db, citizen_id)
    visit = {"id": new_id(), "citizen_id": citizen_id, "business_date": day,
             "priority": priority, "services": json.dumps(services),
             "missing_documents": json.dumps(missing_documents),
             "status": "missing_documents" if missing_documents else "open",
             "created_by": actor["id"], "created_at": now,
             "closed_at": now if missing_documents else None}
    sql.insert(db, "visits", visit)
    ticket = None
    if not missing_documents:
        ticket = _issue_ticket(db, visit, resolved, weight, actor, now, day)
    audit.append(db, actor, "visit.create", "visit", visit["id"], now,
                 {"services": services, "priority": priority,
                  "missing_documents": len(missing_documents)})
    return {"visit": decode_visit(visit), "ticket": ticket}


def _issue_ticket(db: Database, visit: dict[str, Any], services: list[dict[str, Any]],
                  weight: int, actor: dict[str, Any], now: str, day: str) -> dict[str, Any]:
    """Number the ticket in the first service's queue and enqueue it."""
    first = services[0]
    number = next_number(db, first["agency_code"], day)
    ticket = {
        "id": new_id(), "visit_id": visit["id"],
        "number": epoch.ticket_number(first["queue_prefix"], number),
        "queue_prefix": first["queue_prefix"], "daily_number": number, "business_date": day,
        "priority": visit["priority"], "priority_weight": weight, "status": "waiting",
        "queue_code": first["agency_code"], "service_code": first["code"],
        "counter_id": None, "staff_id": None, "target_counter_id": None,
        "enqueued_at": now, "order_key": next_order_key(db), "called_at": None,
        "recall_count": 0, "rejoin_until": None, "hold_reason": None,
        "issued_at": now, "updated_at": now, "completed_at": None,
    }
    sql.insert(db, "tickets", ticket)
    sql.insert_many(db, "ticket_services", [
        {"id": new_id(), "ticket_id": ticket["id"], "position": i, "service_code": s["code"],
         "queue_code": s["agency_code"], "status": "waiting" if i == 0 else "pending",
         "enqueued_at": now if i == 0 else None, "called_at": None, "completed_at": None,
         "counter_id": None, "staff_id": None}
        for i, s in enumerate(services)])
    add_event(db, ticket, "issued", actor, now)
    return ticket


def add_event(db: Database, ticket: dict[str, Any], event: str, actor: dict[str, Any] | None,
              now: str, detail: dict[str, Any] | None = None) -> None:
    """Append one event to a ticket's timeline (used for KPIs)."""
    sql.insert(db, "ticket_events", {
        "id": new_id(), "ticket_id": ticket["id"], "event": event,
        "service_code": ticket["service_code"], "queue_code": ticket["queue_code"],
        "counter_id": ticket.get("counter_id"), "staff_id": actor["id"] if actor else None,
        "at": now, "detail": json.dumps(detail or {})})


def decode_visit(row: dict[str, Any]) -> dict[str, Any]:
    """A visit row with its JSON columns decoded."""
    return {**row, "services": json.loads(row["services"]),
            "missing_documents": json.loads(row["missing_documents"])}


def get_ticket(db: Database, ticket_id: str) -> dict[str, Any]:
    """One ticket, or NotFoundError."""
    rows = list(db.query("SELECT * FROM tickets WHERE id = ?", [ticket_id]))
    if not rows:
        raise NotFoundError(f"unknown ticket: {ticket_id}")
    return rows[0]
