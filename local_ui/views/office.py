"""Back-office screens: applications (status, ready for collection) and volunteers."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, abort, flash, request
from flask_babel import gettext
from sqlite_utils import Database
from werkzeug.wrappers import Response

from edge_node.api.applications import REFERENCE
from edge_node.domain import applications, citizens, volunteer_shifts, volunteers
from edge_node.domain.catalog import services_by_code
from edge_node.domain.roles import AUDITORS, OPERATORS, RECEPTION, SUPERVISORS
from edge_node.domain.tickets import ticket_services, visit_citizen_id
from edge_node.domain.visits import get_ticket
from edge_node.errors import NotFoundError, ValidationError
from local_ui.lookups import catalog, local_time
from local_ui.security import current_staff, node, screen
from local_ui.web import attempt, back, render

bp = Blueprint("office", __name__)
READERS = RECEPTION | OPERATORS | AUDITORS
ON_SHIFT = SUPERVISORS | {"volunteer"}
REPORT_DAYS = 30


@bp.get("/applications")
@screen(READERS)
def applications_list() -> Response:
    """Applications by status, or one by reference (what the citizen quotes)."""
    db = node().reader()
    status = request.args.get("status") or None
    status = status if status in applications.STATUSES else None
    reference = request.args.get("reference", "").strip()
    rows: list[dict[str, Any]]
    if reference:
        try:
            rows = [applications.get_by_reference(db, reference)]
        except NotFoundError:
            rows = []
    else:
        rows = applications.list_applications(db, status)
    for row in rows:
        row["created"] = local_time(row["created_at"], "%Y-%m-%d %H:%M")
    role = (current_staff() or {}).get("role")
    return render("applications.html", rows=rows, status=status, reference=reference,
                  statuses=applications.STATUSES, services=services_by_code(db),
                  can_hand_over=role in OPERATORS, can_decide=role in SUPERVISORS)


@bp.get("/applications/new")
@screen(OPERATORS)
def application_form() -> Response:
    """Open an application for a ticket's service: references and documents seen."""
    db = node().reader()
    ticket_id = request.args.get("ticket", "")
    try:
        ticket = get_ticket(db, ticket_id)
    except NotFoundError:
        abort(404)
    services = ticket_services(db, ticket_id)
    codes = [s["service_code"] for s in services]
    chosen = request.args.get("service") if request.args.get("service") in codes else codes[0]
    data = catalog(db)
    service = data["services_by_code"].get(chosen) or {"documents": []}
    return render("application_new.html", ticket={"id": ticket["id"], "number": ticket["number"]},
                  needs_citizen=visit_citizen_id(db, ticket["visit_id"]) is None,
                  services=services, chosen=chosen,
                  documents=[data["documents_by_code"][d] for d in service["documents"]
                             if d in data["documents_by_code"]])


def _reference(value: str, label: str) -> str | None:
    """An optional agency or fee reference; ValidationError when malformed."""
    value = value.strip()
    if not value:
        return None
    if not re.fullmatch(REFERENCE, value):
        raise ValidationError(gettext("%(field)s: letters, digits, / _ - only (up to 64).",
                                      field=label))
    return value


def _walk_in_citizen(cnic: str, name: str, actor: dict[str, Any]) -> str | None:
    """For a ticket issued without a citizen: find them by CNIC, or register them by name."""
    if not cnic.strip():
        return None
    n = node()
    try:
        return str(citizens.lookup(n.reader(), n.keys, cnic)["id"])
    except NotFoundError:
        if not name.strip():
            raise ValidationError(gettext("This CNIC is not registered yet: give the "
                                          "citizen's name too.")) from None
    now, keys = n.timestamp(), n.keys
    created = n.write(lambda db: citizens.register(
        db, keys, cnic=cnic, name=name, phone=None, id_kind="cnic", actor=actor, now=now))
    return str(created["id"])


@bp.post("/applications")
@screen(OPERATORS)
def application_create() -> Response:
    """Create the application; its reference is flashed for the citizen's receipt."""
    n, actor = node(), dict(current_staff() or {})
    form = request.form
    now, day = n.timestamp(), n.today()

    def run() -> dict[str, Any]:
        fields = {"service_code": form.get("service_code", ""),
                  "ticket_id": form.get("ticket_id") or None,
                  "citizen_id": _walk_in_citizen(form.get("cnic", ""), form.get("name", ""),
                                                 actor),
                  "agency_reference": _reference(form.get("agency_reference", ""),
                                                 gettext("Agency reference")),
                  "fee_reference": _reference(form.get("fee_reference", ""),
                                              gettext("Fee reference (PSID / challan)")),
                  "documents_seen": form.getlist("documents_seen")}
        return n.write(lambda db: applications.create_application(
            db, fields, actor=actor, now=now, day=day, center_id=n.center_id,
            node_id=n.node_id))

    created = attempt(run)
    if created is None:
        return back("office.application_form", ticket=form.get("ticket_id", ""),
                    service=form.get("service_code", ""))
    flash(gettext("Application opened: %(reference)s", reference=created["reference"]), "ok")
    return back("office.applications_list", reference=created["reference"])


@bp.post("/applications/<application_id>/status")
@screen(OPERATORS)
def application_status(application_id: str) -> Response:
    """Move the status up (operators hand over ready ones; supervisors decide)."""
    n, actor = node(), dict(current_staff() or {})
    status, now = request.form.get("status", ""), n.timestamp()
    note = request.form.get("note", "").strip()[:500] or None
    if attempt(lambda: n.write(lambda db: applications.set_status(
            db, application_id, status, note, actor, now))) is not None:
        flash(gettext("Status changed."), "ok")
    return back("office.applications_list", status=request.form.get("back_status") or None)


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
    return back("office.volunteers_page")


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
    return back("office.volunteers_page")


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
    return back("office.volunteers_page")


