"""Volunteer routes: roster and shifts (supervisors); check-in/out and assists (volunteers too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, g

from edge_node.api.feedback import date_field
from edge_node.api.routing import api_route, node
from edge_node.api.schema import Field, at_least_one
from edge_node.api.shapes import BOOL, INT, NUM, STR, arr, nullable, obj
from edge_node.domain import volunteer_shifts, volunteers
from edge_node.domain.citizens import NAME_MAX_CHARS, NAME_PATTERN, PHONE_PATTERN
from edge_node.domain.roles import SUPERVISORS

T = TypeVar("T")
bp = Blueprint("volunteers", __name__, url_prefix="/api")

ON_SHIFT = SUPERVISORS | {"volunteer"}
HHMM = volunteer_shifts.HHMM_PATTERN
HH_COLON_MM = r"[0-9]{2}:[0-9]{2}"  # checked here; the domain then says when it is no time
VOLUNTEER = obj(id=STR, name=STR, phone=nullable(STR), skills=arr(STR), active=BOOL,
                created_at=STR, updated_at=STR)
SHIFT = obj(id=STR, volunteer_id=STR, volunteer_name=STR, business_date=STR, planned_start=STR,
            planned_end=STR, assignment=nullable(STR), checked_in_at=nullable(STR),
            checked_out_at=nullable(STR), assists=INT, created_at=STR)
HOURS = obj(volunteer_id=STR, name=STR, shifts=INT, attended=INT, planned_hours=NUM,
            worked_hours=NUM, assists=INT)
PHONE = Field("phone", "string", required=False, min=1, max=20, pattern=PHONE_PATTERN,
              domain_checked=True,
              description="Pakistani mobile: 03XX-XXXXXXX or +923XXXXXXXXX (stored encrypted)")
SKILLS = Field("skills", "array", required=False, max=volunteers.MAX_SKILLS, items="string",
               item_pattern=volunteers.SKILL_PATTERN, domain_checked=True,
               description="Skill codes, e.g. urdu, pashto, sign_language, wheelchair_help")
NAME = Field("name", "string", min=1, max=NAME_MAX_CHARS, pattern=NAME_PATTERN,
             domain_checked=True, description="Not blank, no control characters")
PATCH_FIELDS = [Field("name", "string", required=False, min=1, max=NAME_MAX_CHARS,
                      pattern=NAME_PATTERN, domain_checked=True), PHONE, SKILLS,
                Field("active", "boolean", required=False)]


def _as_staff(fn: Callable[..., T], *args: Any) -> T:
    """Run a write as the logged-in staff member, at the current time."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: fn(db, *args, actor, now))


@api_route(bp, "/volunteers", "POST", summary="Add a volunteer to the roster", status=201,
           roles=SUPERVISORS, response=VOLUNTEER,
           body=[NAME, PHONE, SKILLS])
def add_volunteer(body: dict[str, Any]) -> dict[str, Any]:
    """Active from the start."""
    n, actor = node(), dict(g.staff)
    now, keys = n.timestamp(), n.keys
    return n.write(lambda db: volunteers.add_volunteer(
        db, keys, name=body["name"], phone=body["phone"], skills=body["skills"] or [],
        actor=actor, now=now))


@api_route(bp, "/volunteers", "GET", summary="The roster, by name", roles=SUPERVISORS,
           response=arr(VOLUNTEER),
           query=[Field("active", "string", required=False, enum=("true", "false"),
                        description="true: active volunteers only (default false: all)")])
def list_volunteers(query: dict[str, Any]) -> list[dict[str, Any]]:
    """Phones decrypted for the supervisor."""
    n = node()
    return volunteers.list_volunteers(n.reader(), n.keys, query["active"] == "true")


@api_route(bp, "/volunteers/<volunteer_id>", "GET", summary="One volunteer",
           roles=SUPERVISORS, response=VOLUNTEER)
def get_volunteer(volunteer_id: str) -> dict[str, Any]:
    """By id."""
    n = node()
    return volunteers.get_volunteer(n.reader(), n.keys, volunteer_id)


@api_route(bp, "/volunteers/<volunteer_id>", "PATCH", roles=SUPERVISORS, response=VOLUNTEER,
           summary="Change a volunteer's name, phone, skills or active flag",
           body=PATCH_FIELDS, rules=[at_least_one(PATCH_FIELDS)])
def update_volunteer(volunteer_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Only the fields sent change."""
    keys = node().keys
    return _as_staff(lambda db, actor, now: volunteers.update_volunteer(
        db, keys, volunteer_id, body, actor, now))


@api_route(bp, "/volunteers/<volunteer_id>/shifts", "POST", summary="Plan a shift",
           roles=SUPERVISORS, status=201, response=SHIFT,
           cross_field_rules=[volunteer_shifts.END_AFTER_START],
           body=[date_field("business_date"),
                 Field("planned_start", "string", pattern=HHMM, shape=HH_COLON_MM,
                       domain_checked=True,
                       description="HH:MM, 00:00 to 23:59"),
                 Field("planned_end", "string", pattern=HHMM, shape=HH_COLON_MM,
                       domain_checked=True,
                       description="HH:MM, 00:00 to 23:59"),
                 Field("assignment", "string", required=False, min=1, max=100,
                       description="Where or what, e.g. reception desk, elderly help")])
def add_shift(volunteer_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Overlapping shifts of one volunteer are a 409."""
    return _as_staff(volunteer_shifts.add_shift, volunteer_id, body)


@api_route(bp, "/volunteer-shifts", "GET", summary="The shifts of a day (default today)",
           roles=ON_SHIFT, response=arr(SHIFT),
           query=[date_field("date", required=False)])
def list_shifts(query: dict[str, Any]) -> list[dict[str, Any]]:
    """By planned start."""
    n = node()
    return volunteer_shifts.list_shifts(n.reader(), query["date"] or n.today())


@api_route(bp, "/volunteer-shifts/<shift_id>/check-in", "POST", summary="Start a shift",
           roles=ON_SHIFT, response=SHIFT)
def check_in(shift_id: str) -> dict[str, Any]:
    """Only on the shift's own day, and once."""
    n, actor = node(), dict(g.staff)
    now, today = n.timestamp(), n.today()
    return n.write(lambda db: volunteer_shifts.check_in(db, shift_id, actor, now, today))


@api_route(bp, "/volunteer-shifts/<shift_id>/check-out", "POST", summary="End a shift",
           roles=ON_SHIFT, response=SHIFT)
def check_out(shift_id: str) -> dict[str, Any]:
    """Only after check-in, and once."""
    return _as_staff(volunteer_shifts.check_out, shift_id)


@api_route(bp, "/volunteer-shifts/<shift_id>/assists", "POST", roles=ON_SHIFT, response=SHIFT,
           summary="Count citizens helped during a checked-in shift",
           body=[Field("count", "integer", required=False, min=1, max=50,
                       description="How many to add (default 1)")])
def add_assists(shift_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Increments; never sets."""
    return _as_staff(volunteer_shifts.add_assists, shift_id, body["count"] or 1)


@api_route(bp, "/volunteers/hours", "GET", roles=SUPERVISORS, response=arr(HOURS),
           summary="Hours per volunteer over a date range (planned, worked, assists)",
           query=[date_field("from"), date_field("to")],
           cross_field_rules=[volunteer_shifts.TO_BEFORE_FROM, volunteer_shifts.RANGE_TOO_LONG])
def hours(query: dict[str, Any]) -> list[dict[str, Any]]:
    """Worked hours count finished shifts only."""
    return volunteer_shifts.hours_report(node().reader(), query["from"], query["to"])
