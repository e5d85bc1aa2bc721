"""Reading tickets for the screens: a ticket's services and citizen, the tickets at a
counter, its recently finished services, the day's no-shows, a ticket by its number.

Read-only (any connection, usually the thread's reader); no citizen data beyond the id.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database


def ticket_services(db: Database, ticket_id: str) -> list[dict[str, Any]]:
    """The services of a ticket in serving order, with their names."""
    return list(db.query(
        "SELECT ts.*, s.name_en, s.name_ur FROM ticket_services ts "
        "JOIN services s ON s.code = ts.service_code WHERE ts.ticket_id = ? "
        "ORDER BY ts.position", [ticket_id]))


def visit_citizen_id(db: Database, visit_id: str) -> str | None:
    """The citizen a visit was registered for (None: a walk-in without one)."""
    row = db.execute("SELECT citizen_id FROM visits WHERE id = ?", [visit_id]).fetchone()
    return str(row[0]) if row and row[0] else None


def at_counter(db: Database, counter_id: str, status: str) -> list[dict[str, Any]]:
    """Tickets with `status` at a counter, newest call first."""
    return list(db.query("SELECT * FROM tickets WHERE counter_id = ? AND status = ? "
                         "ORDER BY called_at DESC", [counter_id, status]))


def recently_served(db: Database, counter_id: str, day: str, limit: int
                    ) -> list[dict[str, Any]]:
    """Services of `day` lately completed at a counter, with the application opened for
    each (its reference, or None)."""
    return list(db.query(
        "SELECT t.id, t.number, ts.service_code, s.name_en, s.name_ur, ts.completed_at, "
        "(SELECT reference FROM applications a WHERE a.ticket_id = t.id "
        " AND a.service_code = ts.service_code) AS reference "
        "FROM ticket_services ts JOIN tickets t ON t.id = ts.ticket_id "
        "JOIN services s ON s.code = ts.service_code "
        "WHERE ts.counter_id = ? AND ts.status = 'done' AND t.business_date = ? "
        "ORDER BY ts.completed_at DESC LIMIT ?", [counter_id, day, limit]))


def no_shows(db: Database, day: str, limit: int) -> list[dict[str, Any]]:
    """The day's tickets marked no-show, latest first (id, number, rejoin_until)."""
    return list(db.query("SELECT id, number, rejoin_until FROM tickets WHERE status = "
                         "'no_show' AND business_date = ? ORDER BY updated_at DESC "
                         "LIMIT ?", [day, limit]))


def ticket_id_by_number(db: Database, number: str, day: str) -> str | None:
    """The id of the ticket numbered `number` (`A-017`) on `day`, or None."""
    row = db.execute("SELECT id FROM tickets WHERE number = ? AND business_date = ?",
                     [number, day]).fetchone()
    return str(row[0]) if row else None
