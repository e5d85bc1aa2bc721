"""Counters: linked to the services they serve; open, paused (with reason) or closed."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit
from edge_node.domain.catalog import get_service
from edge_node.errors import ConflictError, NotFoundError, ValidationError
from edge_node.ids import new_id

STATES = ("open", "paused", "closed")
PAUSE_REASONS = ("break", "prayer", "system_down", "meeting", "other")


def decode(row: dict[str, Any]) -> dict[str, Any]:
    """A counter row with its services list decoded."""
    return {**row, "services": json.loads(row["services"])}


def get_counter(db: Database, counter_id: str) -> dict[str, Any]:
    """One counter, or NotFoundError."""
    rows = list(db.query("SELECT * FROM counters WHERE id = ?", [counter_id]))
    if not rows:
        raise NotFoundError(f"unknown counter: {counter_id}")
    return decode(rows[0])


def list_counters(db: Database) -> list[dict[str, Any]]:
    """Every counter, by name."""
    return [decode(r) for r in db.query("SELECT * FROM counters ORDER BY name")]


def create_counter(db: Database, name: str, services: list[str], now: str,
                   actor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a closed counter serving `services` (codes must exist)."""
    if not services:
        raise ValidationError("services: a counter must serve at least one service")
    for code in services:
        get_service(db, code)
    if db.execute("SELECT 1 FROM counters WHERE name = ?", [name]).fetchone():
        raise ConflictError(f"a counter named '{name}' exists already")
    counter_id = new_id()
    row: dict[str, Any] = {
        "id": counter_id, "name": name, "services": json.dumps(sorted(set(services))),
        "state": "closed", "pause_reason": None, "staff_id": None, "priority_streak": 0,
        "updated_at": now}
    db.table("counters").insert(row)
    audit.append(db, actor, "counter.create", "counter", counter_id, now)
    return decode(row)


def set_state(db: Database, counter_id: str, state: str, actor: dict[str, Any], now: str,
              reason: str | None = None) -> dict[str, Any]:
    """Open, pause (reason required) or close a counter."""
    counter = get_counter(db, counter_id)
    if state not in STATES:
        raise ValidationError(f"state: must be one of {', '.join(STATES)}")
    if state == "paused" and reason not in PAUSE_REASONS:
        raise ValidationError(f"reason: pausing needs one of {', '.join(PAUSE_REASONS)}")
    if counter["state"] == state:
        raise ConflictError(f"counter is already {state}")
    if state == "closed" and _has_active_ticket(db, counter_id):
        raise ConflictError("counter still has a called or held ticket; finish it first")
    staff_id = None if state == "closed" else actor["id"]
    db.execute("UPDATE counters SET state = ?, pause_reason = ?, staff_id = ?, updated_at = ? "
               "WHERE id = ?", [state, reason if state == "paused" else None, staff_id, now,
                                counter_id])
    audit.append(db, actor, f"counter.{state}", "counter", counter_id, now,
                 {"reason": reason} if reason else None)
    return get_counter(db, counter_id)


def _has_active_ticket(db: Database, counter_id: str) -> bool:
    """True when a ticket is called to, or held at, this counter."""
    return db.execute("SELECT 1 FROM tickets WHERE counter_id = ? AND status IN "
                      "('called', 'held')", [counter_id]).fetchone() is not None
