"""Applications (service requests) made at the counter, and their status lattice.

Status only ever climbs: submitted < in_review < ready | rejected < collected.
Who sets which status is one declared table (sync/merge.py
APPLICATION_STATUS_SETTERS): the center sets submitted, in_review and
collected; the decision (ready, or rejected with a reason) is the agency back
office's and reaches the node through HQ (`apply_decision`), never from the
center's own API or screens. A node and HQ may both move one application; because a move
must strictly raise the rank, replays and late copies can never drag it
back. `status_hlc` stamps each move for last-writer-wins of equal ranks.
References encode center, node, day and a per-day sequence, so two nodes
never hand out the same one.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit, epoch
from edge_node.domain.catalog import get_service
from edge_node.domain.roles import SUPERVISORS
from edge_node.domain.visits import get_ticket
from edge_node.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from edge_node.ids import new_id
from sync.merge import (
    APPLICATION_RANKS,
    APPLICATION_STATUS_SETTERS,
    APPLICATION_STATUSES,
    CENTER,
)

STATUSES = APPLICATION_STATUSES  # the lattice is the merge policy's (sync/merge.py)
CENTER_STATUSES = tuple(s for s in STATUSES if APPLICATION_STATUS_SETTERS[s] == CENTER)
HANDOVER = ("ready", "collected")  # the one move an operator (not only a supervisor) makes
REFERENCE_KIND = "application"
LIST_LIMIT = 200


def rank(status: str) -> int:
    """Height of a status in the lattice; ValidationError for an unknown status."""
    if status not in APPLICATION_RANKS:
        raise ValidationError(f"status: must be one of {', '.join(STATUSES)}")
    return APPLICATION_RANKS[status]


def can_move(old: str, new: str) -> bool:
    """True when `new` is strictly above `old` (equal ranks, e.g. ready/rejected, are not)."""
    return rank(new) > rank(old)


def format_reference(center_id: str, node_id: str, day: str, seq: int,
                     restore_epoch: int = 0) -> str:
    """`{center}-{node}-{YYYYMMDD}-{seq:05d}`, with `-R{epoch}` before the seq after a restore."""
    marker = f"R{restore_epoch}-" if restore_epoch else ""
    return f"{center_id}-{node_id}-{day.replace('-', '')}-{marker}{seq:05d}"


def next_reference(db: Database, center_id: str, node_id: str, day: str) -> str:
    """The next application reference of this node and day (writer).

    On a restored node, for days up to the restore, in the restore epoch's own
    sequence (edge_node/domain/epoch.py): never a reference issued before.
    """
    restore_epoch = epoch.for_day(db, day)
    kind = epoch.counter_key(REFERENCE_KIND, restore_epoch)
    db.execute(
        "INSERT INTO reference_numbers (kind, business_date, last_number) VALUES (?, ?, 1) "
        "ON CONFLICT (kind, business_date) DO UPDATE SET last_number = last_number + 1",
        [kind, day])
    row = db.execute("SELECT last_number FROM reference_numbers WHERE kind = ? "
                     "AND business_date = ?", [kind, day]).fetchone()
    return format_reference(center_id, node_id, day, int(row[0]), restore_epoch)


def current_hlc(db: Database) -> str:
    """A fresh HLC timestamp from the node clock bound to this connection."""
    return str(db.execute("SELECT sync_hlc()").fetchone()[0])


def decode(row: dict[str, Any]) -> dict[str, Any]:
    """An application row with documents_seen decoded."""
    return {**row, "documents_seen": json.loads(row["documents_seen"])}


def get_application(db: Database, application_id: str) -> dict[str, Any]:
    """One application, or NotFoundError."""
    rows = list(db.query("SELECT * FROM applications WHERE id = ?", [application_id]))
    if not rows:
        raise NotFoundError(f"unknown application: {application_id}")
    return decode(rows[0])


def get_by_reference(db: Database, reference: str) -> dict[str, Any]:
    """One application by its reference number, or NotFoundError."""
    rows = list(db.query("SELECT * FROM applications WHERE reference = ?", [reference]))
    if not rows:
        raise NotFoundError(f"unknown application reference: {reference}")
    return decode(rows[0])


def list_applications(db: Database, status: str | None = None, ticket_id: str | None = None,
                      limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    """Applications, newest first, optionally of one status and/or ticket."""
    where, params = ["1 = 1"], []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if ticket_id is not None:
        where.append("ticket_id = ?")
        params.append(ticket_id)
    rows = db.query(f"SELECT * FROM applications WHERE {' AND '.join(where)} "
                    "ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit])
    return [decode(r) for r in rows]


def _check_documents(service: dict[str, Any], codes: list[str]) -> None:
    """Documents seen must come from the service's checklist, each once."""
    if len(set(codes)) != len(codes):
        raise ValidationError("documents_seen: a document is listed twice")
    if not set(codes) <= set(service["documents"]):
        raise ValidationError(
            f"documents_seen: codes must be on the checklist of {service['code']}: "
            f"{', '.join(service['documents'])}")


def _ticket_citizen(db: Database, ticket_id: str, service_code: str) -> str | None:
    """Check the ticket covers the service and has no application for it; its visit's citizen."""
    ticket = get_ticket(db, ticket_id)
    if not db.execute("SELECT 1 FROM ticket_services WHERE ticket_id = ? AND service_code = ?",
                      [ticket_id, service_code]).fetchone():
        raise ValidationError(f"service_code: ticket {ticket['number']} does not include "
                              f"{service_code}")
    existing = db.execute("SELECT reference FROM applications WHERE ticket_id = ? AND "
                          "service_code = ?", [ticket_id, service_code]).fetchone()
    if existing:
        raise ConflictError(f"ticket {ticket['number']} already has an application for "
                            f"{service_code}: {existing[0]}")
    row = db.execute("SELECT citizen_id FROM visits WHERE id = ?", [ticket["visit_id"]])
    citizen: str | None = row.fetchone()[0]
    return citizen


def _resolve_citizen(db: Database, given: str | None, of_visit: str | None) -> str:
    """The application's citizen: as given, or the ticket visit's; it must exist."""
    if given and of_visit and given != of_visit:
        raise ValidationError("citizen_id: differs from the citizen of the ticket's visit")
    citizen_id = given or of_visit
    if citizen_id is None:
        raise ValidationError("citizen_id: is required (no ticket naming a citizen was given)")
    if not db.execute("SELECT 1 FROM citizens WHERE id = ?", [citizen_id]).fetchone():
        raise NotFoundError(f"unknown citizen: {citizen_id}")
    return citizen_id


def create_application(db: Database, fields: dict[str, Any], *, actor: dict[str, Any],
                       now: str, day: str, center_id: str, node_id: str) -> dict[str, Any]:
    """Record a service request made at the counter (writer).

    `fields`: service_code, ticket_id, citizen_id, agency_reference, fee_reference,
    documents_seen (None where not given).
    """
    service = get_service(db, fields["service_code"])
    documents = fields["documents_seen"] or []
    _check_documents(service, documents)
    ticket_id = fields["ticket_id"]
    of_visit = _ticket_citizen(db, ticket_id, service["code"]) if ticket_id else None
    row = {
        "id": new_id(), "reference": next_reference(db, center_id, node_id, day),
        "ticket_id": ticket_id, "citizen_id": _resolve_citizen(db, fields["citizen_id"], of_visit),
        "service_code": service["code"], "agency_code": service["agency_code"],
        "agency_reference": fields["agency_reference"], "fee_reference": fields["fee_reference"],
        "documents_seen": json.dumps(documents), "status": "submitted",
        "status_hlc": current_hlc(db), "created_by": actor["id"], "created_at": now,
        "updated_at": now, "notes": None, "decision_reason": None, "decided_at": None,
    }
    db.table("applications").insert(row)
    audit.append(db, actor, "application.create", "application", row["id"], now,
                 {"reference": row["reference"], "service": service["code"]})
    return decode(row)


def refusal(application: dict[str, Any], new: str) -> str:
    """Why a move is not allowed by the lattice, in words (no PII: reference and statuses)."""
    old, ref = application["status"], application["reference"]
    if old == new:
        return f"application {ref} is already {new}"
    if rank(new) == rank(old):
        return f"application {ref} is {old}; a decision cannot change to {new}"
    return f"application {ref} is {old}; status never moves back to {new}"


def center_moves(application: dict[str, Any]) -> list[str]:
    """The statuses the center itself may move this application to (for the screen)."""
    return [s for s in CENTER_STATUSES if can_move(application["status"], s)]


def set_status(db: Database, application_id: str, status: str, note: str | None,
               actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Move an application up the lattice (writer); operators may only hand over.

    A back-office status (ready, rejected) is refused: it comes from HQ as a decision.
    """
    application = get_application(db, application_id)
    rank(status)
    if APPLICATION_STATUS_SETTERS[status] != CENTER:
        raise ForbiddenError(f"{status} is the agency back office's decision; it reaches the "
                             "center through HQ and cannot be set here")
    if not can_move(application["status"], status):
        raise ConflictError(refusal(application, status))
    if actor["role"] not in SUPERVISORS and (application["status"], status) != HANDOVER:
        raise ForbiddenError(f"role '{actor['role']}' may only hand over a ready application "
                             "(ready to collected); other moves need a supervisor")
    changes = {"status": status, "status_hlc": current_hlc(db), "updated_at": now}
    if note is not None:
        changes["notes"] = note
    db.table("applications").update(application_id, changes)
    audit.append(db, actor, "application.status", "application", application_id, now,
                 {"from": application["status"], "to": status})
    return get_application(db, application_id)


def apply_decision(db: Database, application: dict[str, Any], status: str,
                   reason: str | None, now: str) -> bool:
    """Record a back-office decision from HQ (writer); False when it is already recorded.

    The caller has checked the decision itself (sync/merge.py decision_problem).
    The same decision again (same status and reason) changes nothing; any other
    move the lattice forbids is a ConflictError, with the words of `refusal`.
    """
    if application["status"] == status and application["decision_reason"] == reason:
        return False
    if not can_move(application["status"], status):
        raise ConflictError(refusal(application, status))
    db.table("applications").update(application["id"], {
        "status": status, "status_hlc": current_hlc(db), "decision_reason": reason,
        "decided_at": now, "updated_at": now})
    audit.append(db, None, "application.decision", "application", application["id"], now,
                 {"from": application["status"], "to": status})
    return True
