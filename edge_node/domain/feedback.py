"""Citizen feedback: a 1-5 rating (and optional comment) once per ticket, after service.

Each rating is linked to the service, counter and staff member of the
ticket's last completed service, so satisfaction can be read per counter and
per operator. The comment is the citizen's own words: it is stored but never
copied into the audit log.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit
from edge_node.domain.visits import get_ticket
from edge_node.errors import ConflictError, ValidationError
from edge_node.ids import new_id

COMMENT_MAX_CHARS = 500


def _last_completed(db: Database, ticket: dict[str, Any]) -> dict[str, Any]:
    """The ticket's most recently completed service segment, or ConflictError."""
    rows = list(db.query(
        "SELECT service_code, counter_id, staff_id FROM ticket_services WHERE ticket_id = ? "
        "AND status = 'done' ORDER BY completed_at DESC, position DESC LIMIT 1", [ticket["id"]]))
    if not rows:
        raise ConflictError(f"ticket {ticket['number']} has no completed service to rate yet")
    return rows[0]


def _clean_comment(comment: str | None) -> str | None:
    """Trimmed comment; blank means none."""
    if comment is None or not comment.strip():
        return None
    text = comment.strip()
    if len(text) > COMMENT_MAX_CHARS:
        raise ValidationError(f"comment: must be at most {COMMENT_MAX_CHARS} characters")
    return text


def give_feedback(db: Database, ticket_id: str, rating: int, comment: str | None,
                  actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Record the rating of a served ticket (writer); a second rating is a conflict."""
    if isinstance(rating, bool) or not 1 <= rating <= 5:
        raise ValidationError("rating: must be a whole number from 1 to 5")
    text = _clean_comment(comment)
    ticket = get_ticket(db, ticket_id)
    if db.execute("SELECT 1 FROM feedback WHERE ticket_id = ?", [ticket_id]).fetchone():
        raise ConflictError(f"ticket {ticket['number']} has been rated already")
    segment = _last_completed(db, ticket)
    row = {"id": new_id(), "ticket_id": ticket_id, "rating": rating, "comment": text,
           **segment, "created_at": now}
    db.table("feedback").insert(row)
    audit.append(db, actor, "feedback.create", "feedback", row["id"], now,
                 {"ticket_id": ticket_id, "rating": rating})
    return row


def latest_unrated(db: Database, counter_id: str) -> dict[str, Any] | None:
    """The ticket whose service was last completed at a counter, if it has no rating yet
    (id, number, completed_at), for the feedback kiosk standing there."""
    rows = list(db.query(
        "SELECT t.id, t.number, ts.completed_at FROM ticket_services ts "
        "JOIN tickets t ON t.id = ts.ticket_id WHERE ts.counter_id = ? AND ts.status = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.ticket_id = t.id) "
        "ORDER BY ts.completed_at DESC LIMIT 1", [counter_id]))
    return rows[0] if rows else None


def list_feedback(db: Database, day: str) -> list[dict[str, Any]]:
    """Feedback on the tickets of one business day, oldest first."""
    return list(db.query(
        "SELECT f.* FROM feedback f JOIN tickets t ON t.id = f.ticket_id "
        "WHERE t.business_date = ? ORDER BY f.created_at, f.id", [day]))
