"""Volunteer shifts: planning, check-in and check-out, assists, and the hours report.

Planned times are the center's wall clock ("HH:MM" on a business day);
check-in and check-out are stored timestamps, so worked hours are exact even
across a time-zone or clock-format change.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from sqlite_utils import Database

from edge_node.domain import audit
from edge_node.domain.volunteers import volunteer_row
from edge_node.errors import ConflictError, NotFoundError, ValidationError
from edge_node.ids import new_id, parse_iso

MAX_REPORT_DAYS = 366
# Refusals of values that fit the schema one by one but not together (declared in OpenAPI).
END_AFTER_START = "planned_end: must be after planned_start"
TO_BEFORE_FROM = "to: must not be before from"
RANGE_TOO_LONG = f"to: a report covers at most {MAX_REPORT_DAYS} days"
# Declared as they are in the OpenAPI document (one definition). A date is also a real one
# (`format: date`: no 2026-02-30); year 0000 does not exist in Python's calendar.
DATE_PATTERN = r"(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}"
HHMM_PATTERN = r"([01][0-9]|2[0-3]):([0-5][0-9])"
_DATE = re.compile(DATE_PATTERN)
_HHMM = re.compile(HHMM_PATTERN)
_SHIFT_SQL = ("SELECT s.*, v.name AS volunteer_name FROM volunteer_shifts s "
              "JOIN volunteers v ON v.id = s.volunteer_id")


def parse_day(text: str, field: str) -> date:
    """A YYYY-MM-DD calendar date that exists (not 2026-02-30, nor an ISO week date)."""
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise ValidationError(f"{field}: must be a date written YYYY-MM-DD")


def minutes(text: str, field: str) -> int:
    """Minutes after midnight of an "HH:MM" time."""
    match = _HHMM.fullmatch(text)
    if not match:
        raise ValidationError(f"{field}: must be a time written HH:MM (00:00 to 23:59)")
    return int(match.group(1)) * 60 + int(match.group(2))


def get_shift(db: Database, shift_id: str) -> dict[str, Any]:
    """One shift with its volunteer's name, or NotFoundError."""
    rows = list(db.query(f"{_SHIFT_SQL} WHERE s.id = ?", [shift_id]))
    if not rows:
        raise NotFoundError(f"unknown shift: {shift_id}")
    return rows[0]


def list_shifts(db: Database, day: str) -> list[dict[str, Any]]:
    """The shifts of a business day, by planned start."""
    parse_day(day, "date")
    return list(db.query(f"{_SHIFT_SQL} WHERE s.business_date = ? "
                         "ORDER BY s.planned_start, v.name", [day]))


def _check_overlap(db: Database, volunteer_id: str, day: str, start: str, end: str) -> None:
    """A volunteer cannot be planned twice at the same time."""
    if db.execute("SELECT 1 FROM volunteer_shifts WHERE volunteer_id = ? AND business_date = ? "
                  "AND planned_start < ? AND ? < planned_end",
                  [volunteer_id, day, end, start]).fetchone():
        raise ConflictError(f"the volunteer already has a shift overlapping {start}-{end} on {day}")


def add_shift(db: Database, volunteer_id: str, plan: dict[str, Any], actor: dict[str, Any],
              now: str) -> dict[str, Any]:
    """Plan a shift (writer); `plan`: business_date, planned_start, planned_end, assignment."""
    day = parse_day(plan["business_date"], "business_date").isoformat()
    start, end = plan["planned_start"], plan["planned_end"]
    if minutes(end, "planned_end") <= minutes(start, "planned_start"):
        raise ValidationError(END_AFTER_START)
    if not volunteer_row(db, volunteer_id)["active"]:
        raise ConflictError("the volunteer is inactive; reactivate them first")
    _check_overlap(db, volunteer_id, day, start, end)
    shift_id = new_id()
    db.table("volunteer_shifts").insert({
        "id": shift_id, "volunteer_id": volunteer_id, "business_date": day,
        "planned_start": start, "planned_end": end, "assignment": plan["assignment"],
        "checked_in_at": None, "checked_out_at": None, "assists": 0, "created_at": now})
    audit.append(db, actor, "shift.plan", "volunteer_shift", shift_id, now,
                 {"volunteer_id": volunteer_id, "business_date": day})
    return get_shift(db, shift_id)


def check_in(db: Database, shift_id: str, actor: dict[str, Any], now: str,
             today: str) -> dict[str, Any]:
    """Start a shift, on its own day, once (writer)."""
    shift = get_shift(db, shift_id)
    if shift["checked_in_at"] is not None:
        raise ConflictError("this shift is checked in already")
    if shift["business_date"] != today:
        raise ConflictError(f"this shift is on {shift['business_date']}; check in on that day")
    db.table("volunteer_shifts").update(shift_id, {"checked_in_at": now})
    audit.append(db, actor, "shift.check_in", "volunteer_shift", shift_id, now)
    return get_shift(db, shift_id)


def check_out(db: Database, shift_id: str, actor: dict[str, Any], now: str) -> dict[str, Any]:
    """End a checked-in shift, once (writer)."""
    shift = get_shift(db, shift_id)
    if shift["checked_in_at"] is None:
        raise ConflictError("this shift is not checked in; check in before checking out")
    if shift["checked_out_at"] is not None:
        raise ConflictError("this shift is checked out already")
    if parse_iso(now) < parse_iso(shift["checked_in_at"]):
        raise ConflictError("check-out time would be before the check-in time; check the clock")
    db.table("volunteer_shifts").update(shift_id, {"checked_out_at": now})
    audit.append(db, actor, "shift.check_out", "volunteer_shift", shift_id, now)
    return get_shift(db, shift_id)


def add_assists(db: Database, shift_id: str, count: int, actor: dict[str, Any],
                now: str) -> dict[str, Any]:
    """Count citizens helped during a shift that is under way (writer)."""
    shift = get_shift(db, shift_id)
    if shift["checked_in_at"] is None or shift["checked_out_at"] is not None:
        raise ConflictError("assists are counted only while the shift is checked in")
    db.execute("UPDATE volunteer_shifts SET assists = assists + ? WHERE id = ?",
               [count, shift_id])
    audit.append(db, actor, "shift.assists", "volunteer_shift", shift_id, now, {"added": count})
    return get_shift(db, shift_id)


def _hours(row: dict[str, Any]) -> tuple[float, float]:
    """(planned, worked) hours of one shift; worked counts only finished shifts."""
    planned = (minutes(row["planned_end"], "") - minutes(row["planned_start"], "")) / 60
    if row["checked_in_at"] is None or row["checked_out_at"] is None:
        return planned, 0.0
    span = parse_iso(row["checked_out_at"]) - parse_iso(row["checked_in_at"])
    return planned, span.total_seconds() / 3600


def _report_range(first: str, last: str) -> tuple[str, str]:
    """A valid, bounded date range."""
    start, end = parse_day(first, "from"), parse_day(last, "to")
    if end < start:
        raise ValidationError(TO_BEFORE_FROM)
    if end - start >= timedelta(days=MAX_REPORT_DAYS):
        raise ValidationError(RANGE_TOO_LONG)
    return start.isoformat(), end.isoformat()


def hours_report(db: Database, first: str, last: str) -> list[dict[str, Any]]:
    """Per volunteer with shifts in [first, last]: shifts, attendance, hours, assists."""
    first, last = _report_range(first, last)
    report: dict[str, dict[str, Any]] = {}
    for row in db.query(f"{_SHIFT_SQL} WHERE s.business_date BETWEEN ? AND ? ORDER BY v.name",
                        [first, last]):
        entry = report.setdefault(row["volunteer_id"], {
            "volunteer_id": row["volunteer_id"], "name": row["volunteer_name"], "shifts": 0,
            "attended": 0, "planned_hours": 0.0, "worked_hours": 0.0, "assists": 0})
        planned, worked = _hours(row)
        entry["shifts"] += 1
        entry["attended"] += row["checked_in_at"] is not None
        entry["planned_hours"] += planned
        entry["worked_hours"] += worked
        entry["assists"] += row["assists"]
    for entry in report.values():
        entry["planned_hours"] = round(entry["planned_hours"], 2)
        entry["worked_hours"] = round(entry["worked_hours"], 2)
    return list(report.values())
