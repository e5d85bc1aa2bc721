"""Volunteers: today's shifts (check in/out, assists); for supervisors the roster,
shift planning and the hours report."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, abort, flash, request
from flask_babel import gettext
from sqlite_utils import Database
from werkzeug.wrappers import Response

from edge_node.domain import volunteer_shifts, volunteers
from edge_node.domain.roles import SUPERVISORS
from local_ui.lookups import local_time
from local_ui.security import current_staff, node, screen
from local_ui.web import attempt, back, render

bp = Blueprint("volunteers_screen", __name__)
ON_SHIFT = SUPERVISORS | {"volunteer"}
REPORT_DAYS = 30


def _roster(db: Database) -> list[dict[str, Any]]:
    """The roster, for supervisors only (phones are PII)."""
    return volunteers.list_volunteers(db, node().keys, active_only=False)


@bp.get("/volunteers")
@screen(ON_SHIFT)
def volunteers_page() -> Response:
    """Today's shifts (check in/out, assists); for supervisors the roster and planning."""
    n = node()
    db, today = n.reader(), n.today()
    role = (current_staff() or {}).get("role")
    supervisor = role in SUPERVISORS
    shifts = volunteer_shifts.list_shifts(db, today)
    for shift in shifts:
        shift["in"], shift["out"] = (local_time(shift["checked_in_at"]),
                                     local_time(shift["checked_out_at"]))
    first = (date.fromisoformat(today) - timedelta(days=REPORT_DAYS - 1)).isoformat()
    return render("volunteers.html", shifts=shifts, today=today, supervisor=supervisor,
                  roster=_roster(db) if supervisor else [],
                  hours=volunteer_shifts.hours_report(db, first, today) if supervisor else [],
                  report_days=REPORT_DAYS)


def _skills(raw: str) -> list[str]:
    """Skill codes typed as `urdu, sign language` -> ['sign_language', 'urdu']."""
    return [s.strip().lower().replace(" ", "_") for s in raw.split(",") if s.strip()]


@bp.post("/volunteers")
@screen(SUPERVISORS)
def volunteer_add() -> Response:
    """Put a volunteer on the roster."""
    n, actor = node(), dict(current_staff() or {})
    form, now, keys = request.form, n.timestamp(), n.keys
    if attempt(lambda: n.write(lambda db: volunteers.add_volunteer(
            db, keys, name=form.get("name", ""), phone=form.get("phone", "").strip() or None,
            skills=_skills(form.get("skills", "")), actor=actor, now=now))) is not None:
        flash(gettext("Volunteer added."), "ok")
    return back("volunteers_screen.volunteers_page")


@bp.post("/volunteers/<volunteer_id>/shifts")
@screen(SUPERVISORS)
def shift_add(volunteer_id: str) -> Response:
    """Plan a shift for a volunteer."""
    n, actor = node(), dict(current_staff() or {})
    form, now = request.form, n.timestamp()
    plan = {"business_date": form.get("business_date", ""),
            "planned_start": form.get("planned_start", ""),
            "planned_end": form.get("planned_end", ""),
            "assignment": form.get("assignment", "").strip()[:100] or None}
    if attempt(lambda: n.write(lambda db: volunteer_shifts.add_shift(
            db, volunteer_id, plan, actor, now))) is not None:
        flash(gettext("Shift planned."), "ok")
    return back("volunteers_screen.volunteers_page")


@bp.post("/volunteer-shifts/<shift_id>/<action>")
@screen(ON_SHIFT)
def shift_action(shift_id: str, action: str) -> Response:
    """Check in, check out, or count one assist."""
    n, actor = node(), dict(current_staff() or {})
    now, today = n.timestamp(), n.today()
    actions = {
        "check-in": lambda db: volunteer_shifts.check_in(db, shift_id, actor, now, today),
        "check-out": lambda db: volunteer_shifts.check_out(db, shift_id, actor, now),
        "assist": lambda db: volunteer_shifts.add_assists(db, shift_id, 1, actor, now),
    }
    if action not in actions:
        abort(404)
    if attempt(lambda: n.write(actions[action])) is not None:
        flash(gettext("Done."), "ok")
    return back("volunteers_screen.volunteers_page")
