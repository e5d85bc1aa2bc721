"""The live queue: call next (fair priority interleaving), recall, no-show and
rejoin, hold and resume, transfer, complete.

Every function here runs inside the writer, so it sees and changes one
consistent state. Each state change appends a ticket event and an audit entry.

Ticket states: waiting -> called -> (done | waiting at the next service)
called -> no_show -> (waiting again within the grace window | expired)
called -> held -> called (resume);  called/held -> waiting (transfer)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from sqlite_utils import Database

from edge_node.domain import audit
from edge_node.domain.catalog import get_service
from edge_node.domain.counters import get_counter
from edge_node.domain.visits import add_event, get_ticket, next_order_key
from edge_node.errors import ConflictError, ValidationError
from edge_node.ids import iso, parse_iso

TicketStatus = Literal["waiting", "called", "held", "no_show", "expired", "done"]
ACTIVE_AT_COUNTER: tuple[TicketStatus, ...] = ("called", "held")


def _require(ticket: dict[str, Any], states: tuple[TicketStatus, ...], action: str) -> None:
    """Refuse an action that does not fit the ticket's state (e.g. a replay)."""
    if ticket["status"] not in states:
        raise ConflictError(
            f"ticket {ticket['number']} is {ticket['status'].replace('_', '-')}; "
            f"it cannot be {action}")


def _update(db: Database, ticket_id: str, now: str, status: TicketStatus | None = None,
            **fields: Any) -> dict[str, Any]:
    """Change ticket columns (and its status, if given) and return the fresh row."""
    if status is not None:
        fields["status"] = status
    fields["updated_at"] = now
    db.table("tickets").update(ticket_id, fields)
    return get_ticket(db, ticket_id)


def _current_segment(db: Database, ticket: dict[str, Any]) -> dict[str, Any]:
    """The ticket_services row of the service the ticket is at now."""
    rows = list(db.query(
        "SELECT * FROM ticket_services WHERE ticket_id = ? AND status NOT IN "
        "('done', 'pending') ORDER BY position LIMIT 1", [ticket["id"]]))
    if not rows:
        raise ConflictError(f"ticket {ticket['number']} has no open service")
    return rows[0]


def _record(db: Database, ticket: dict[str, Any], event: str, actor: dict[str, Any],
            now: str, detail: dict[str, Any] | None = None) -> None:
    """Ticket event plus audit entry (ticket number and ids only: no PII)."""
    add_event(db, ticket, event, actor, now, detail)
    audit.append(db, actor, f"ticket.{event}", "ticket", ticket["id"], now,
                 {"number": ticket["number"], **(detail or {})})


def _pick(db: Database, counter: dict[str, Any], want_priority: bool) -> dict[str, Any] | None:
    """Head of the priority (weight > 0) or normal class among tickets this counter serves."""
    marks = ",".join("?" * len(counter["services"]))
    weight = "priority_weight > 0" if want_priority else "priority_weight = 0"
    order = "priority_weight DESC, order_key" if want_priority else "order_key"
    rows = list(db.query(
        f"SELECT * FROM tickets WHERE status = 'waiting' AND {weight} "
        f"AND service_code IN ({marks}) AND (target_counter_id IS NULL OR target_counter_id = ?)"
        f" ORDER BY {order} LIMIT 1", [*counter["services"], counter["id"]]))
    return rows[0] if rows else None


def choose_next(db: Database, counter: dict[str, Any], ratio: int) -> dict[str, Any] | None:
    """Fair interleaving: at most `ratio` priority calls in a row while normals wait."""
    priority, normal = _pick(db, counter, True), _pick(db, counter, False)
    if priority and normal:
        return priority if counter["priority_streak"] < ratio else normal
    return priority or normal


def call_next(db: Database, counter_id: str, actor: dict[str, Any], now: str,
              ratio: int) -> dict[str, Any] | None:
    """Call the next ticket to an open counter that has no ticket called."""
    counter = get_counter(db, counter_id)
    if counter["state"] != "open":
        raise ConflictError(f"counter {counter['name']} is {counter['state']}; open it first")
    if db.execute("SELECT 1 FROM tickets WHERE counter_id = ? AND status = 'called'",
                  [counter_id]).fetchone():
        raise ConflictError("this counter already has a called ticket; finish it first")
    ticket = choose_next(db, counter, ratio)
    if ticket is None:
        return None
    streak = counter["priority_streak"] + 1 if ticket["priority_weight"] > 0 else 0
    db.execute("UPDATE counters SET priority_streak = ?, staff_id = ?, updated_at = ? "
               "WHERE id = ?", [streak, actor["id"], now, counter_id])
    return _call(db, ticket, counter_id, actor, now, "called")


def _call(db: Database, ticket: dict[str, Any], counter_id: str, actor: dict[str, Any],
          now: str, event: str) -> dict[str, Any]:
    """Put a ticket at a counter (call or resume)."""
    segment = _current_segment(db, ticket)
    db.table("ticket_services").update(segment["id"], {
        "status": "serving", "counter_id": counter_id, "staff_id": actor["id"],
        "called_at": segment["called_at"] or now})
    ticket = _update(db, ticket["id"], now, status="called", counter_id=counter_id,
                     staff_id=actor["id"], called_at=now, hold_reason=None,
                     target_counter_id=None)
    _record(db, ticket, event, actor, now)
    return ticket


def recall(db: Database, ticket_id: str, actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Announce a called ticket again."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ("called",), "recalled")
    ticket = _update(db, ticket_id, now, recall_count=ticket["recall_count"] + 1, called_at=now)
    _record(db, ticket, "recalled", actor, now)
    return ticket


def no_show(db: Database, ticket_id: str, actor: dict[str, Any], now: datetime,
            grace_minutes: int) -> dict[str, Any]:
    """The called citizen did not come: free the counter, open the rejoin window."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ("called",), "marked no-show")
    segment = _current_segment(db, ticket)
    db.table("ticket_services").update(segment["id"], {"status": "no_show"})
    stamp = iso(now)
    ticket = _update(db, ticket_id, stamp, status="no_show", counter_id=None,
                     rejoin_until=iso(now + timedelta(minutes=grace_minutes)))
    _record(db, ticket, "no_show", actor, stamp)
    return ticket


def rejoin(db: Database, ticket_id: str, actor: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A no-show citizen returns within the grace window: back in line at their old place."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ("no_show",), "rejoined")
    if ticket["rejoin_until"] is None or parse_iso(ticket["rejoin_until"]) < now:
        raise ConflictError(f"ticket {ticket['number']}: the rejoin window has ended")
    segment = _current_segment(db, ticket)
    db.table("ticket_services").update(segment["id"], {"status": "waiting"})
    stamp = iso(now)
    ticket = _update(db, ticket_id, stamp, status="waiting", rejoin_until=None)
    _record(db, ticket, "rejoined", actor, stamp)
    return ticket


def expire_no_shows(db: Database, now: datetime) -> int:
    """Close no-show tickets whose grace window has passed; return how many."""
    stamp = iso(now)
    rows = list(db.query("SELECT * FROM tickets WHERE status = 'no_show' AND rejoin_until < ?",
                         [stamp]))
    for ticket in rows:
        ticket = _update(db, ticket["id"], stamp, status="expired", completed_at=stamp)
        db.execute("UPDATE visits SET status = 'no_show', closed_at = ? WHERE id = ?",
                   [stamp, ticket["visit_id"]])
        _record(db, ticket, "expired", {"id": None, "role": "system"}, stamp)
    return len(rows)


def hold(db: Database, ticket_id: str, reason: str, actor: dict[str, Any],
         now: str) -> dict[str, Any]:
    """Park a called ticket at its counter (e.g. citizen fetching a document)."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ("called",), "put on hold")
    ticket = _update(db, ticket_id, now, status="held", hold_reason=reason)
    # The reason is free text that may name the citizen: it stays on the ticket, out of audit.
    _record(db, ticket, "held", actor, now)
    return ticket


def resume(db: Database, ticket_id: str, actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Bring a held ticket back to its counter."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ("held",), "resumed")
    counter = get_counter(db, ticket["counter_id"])
    if counter["state"] != "open":
        raise ConflictError(f"counter {counter['name']} is {counter['state']}; open it first")
    if db.execute("SELECT 1 FROM tickets WHERE counter_id = ? AND status = 'called'",
                  [ticket["counter_id"]]).fetchone():
        raise ConflictError("the counter has another called ticket; finish it first")
    return _call(db, ticket, ticket["counter_id"], actor, now, "resumed")


def transfer(db: Database, ticket_id: str, actor: dict[str, Any], now: str,
             service_code: str | None, counter_id: str | None) -> dict[str, Any]:
    """Send a called or held ticket to another service's queue and/or a given counter."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ACTIVE_AT_COUNTER, "transferred")
    if service_code is None and counter_id is None:
        raise ValidationError("transfer needs service_code, counter_id or both")
    service = get_service(db, service_code or ticket["service_code"])
    # A service already on the ticket's list would be served twice.
    if service["code"] != ticket["service_code"] and db.execute(
            "SELECT 1 FROM ticket_services WHERE ticket_id = ? AND service_code = ?",
            [ticket_id, service["code"]]).fetchone():
        raise ConflictError(f"ticket {ticket['number']} already has {service['code']} "
                            "on its list")
    if counter_id is not None:
        target = get_counter(db, counter_id)
        if service["code"] not in target["services"]:
            raise ValidationError(f"counter {target['name']} does not serve {service['code']}")
    segment = _current_segment(db, ticket)
    db.table("ticket_services").update(segment["id"], {
        "status": "waiting", "service_code": service["code"], "queue_code":
        service["agency_code"], "enqueued_at": now, "called_at": None, "counter_id": None})
    detail = {"from_service": ticket["service_code"], "to_service": service["code"],
              "to_counter": counter_id}
    ticket = _update(db, ticket_id, now, status="waiting", service_code=service["code"],
                     queue_code=service["agency_code"], counter_id=None, hold_reason=None,
                     target_counter_id=counter_id, enqueued_at=now,
                     order_key=next_order_key(db))
    _record(db, ticket, "transferred", actor, now, detail)
    return ticket


def complete(db: Database, ticket_id: str, actor: dict[str, Any], now: str) -> dict[str, Any]:
    """Finish the current service; queue the ticket for the next one or close the visit."""
    ticket = get_ticket(db, ticket_id)
    _require(ticket, ("called",), "completed")
    segment = _current_segment(db, ticket)
    db.table("ticket_services").update(segment["id"], {"status": "done", "completed_at": now})
    _record(db, ticket, "service_done", actor, now, {"service": segment["service_code"]})
    following = list(db.query(
        "SELECT * FROM ticket_services WHERE ticket_id = ? AND status = 'pending' "
        "ORDER BY position LIMIT 1", [ticket_id]))
    if following:
        nxt = following[0]
        db.table("ticket_services").update(nxt["id"], {"status": "waiting", "enqueued_at": now})
        return _update(db, ticket_id, now, status="waiting", service_code=nxt["service_code"],
                       queue_code=nxt["queue_code"], counter_id=None, enqueued_at=now,
                       order_key=next_order_key(db))
    db.execute("UPDATE visits SET status = 'closed', closed_at = ? WHERE id = ?",
               [now, ticket["visit_id"]])
    ticket = _update(db, ticket_id, now, status="done", completed_at=now)
    _record(db, ticket, "completed", actor, now)
    return ticket


def waiting_by_queue(db: Database) -> list[dict[str, Any]]:
    """Tickets waiting now, per queue, in calling order (numbers only: no PII)."""
    out = []
    for agency in db.query("SELECT code, queue_prefix, name_en, name_ur FROM agencies "
                           "ORDER BY position"):
        tickets = list(db.query(
            "SELECT id, number, priority, service_code, enqueued_at, target_counter_id "
            "FROM tickets WHERE status = 'waiting' AND queue_code = ? "
            "ORDER BY priority_weight DESC, order_key", [agency["code"]]))
        out.append({**agency, "waiting": len(tickets), "tickets": tickets})
    return out


def board(db: Database, limit: int = 12) -> list[dict[str, Any]]:
    """Most recently called tickets with their counters, for the display board."""
    return list(db.query(
        "SELECT t.id, t.number, t.status, t.called_at, t.recall_count, c.name AS counter "
        "FROM tickets t JOIN counters c ON c.id = t.counter_id "
        "WHERE t.status IN ('called', 'held') ORDER BY t.called_at DESC LIMIT ?", [limit]))


