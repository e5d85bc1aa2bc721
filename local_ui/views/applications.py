"""Applications: the list by status or reference, opening one for a served ticket,
moving its status (operators hand over ready ones; supervisors the center's other
moves — ready and rejected are the back office's decision, from HQ), and the
citizen's printed receipt with the decision and its reason."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, flash, request
from flask_babel import gettext
from werkzeug.wrappers import Response

from edge_node.api.applications import REFERENCE
from edge_node.domain import applications, citizens
from edge_node.domain.catalog import services_by_code
from edge_node.domain.roles import AUDITORS, OPERATORS, RECEPTION, SUPERVISORS
from edge_node.domain.tickets import ticket_services, visit_citizen_id
from edge_node.domain.visits import get_ticket
from edge_node.errors import NotFoundError, ValidationError
from local_ui.lookups import catalog, local_time
from local_ui.security import current_staff, node, screen
from local_ui.web import attempt, back, render

bp = Blueprint("applications_screen", __name__)
READERS = RECEPTION | OPERATORS | AUDITORS


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
        row["decided"] = local_time(row["decided_at"], "%Y-%m-%d %H:%M") \
            if row["decided_at"] else None
        row["moves"] = applications.center_moves(row)
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
        return back("applications_screen.application_form", ticket=form.get("ticket_id", ""),
                    service=form.get("service_code", ""))
    flash(gettext("Application opened: %(reference)s", reference=created["reference"]), "ok")
    return back("applications_screen.applications_list", reference=created["reference"])


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
    return back("applications_screen.applications_list",
                status=request.form.get("back_status") or None)


@bp.get("/applications/<application_id>/receipt")
@screen(READERS)
def application_receipt(application_id: str) -> Response:
    """The citizen's printable receipt: reference, service, status, and the back office's
    decision with its reason, in English and Urdu."""
    db = node().reader()
    try:
        found = applications.get_application(db, application_id)
    except NotFoundError:
        abort(404)
    return render("application_receipt.html", a=found,
                  service=services_by_code(db).get(found["service_code"]) or {},
                  opened=local_time(found["created_at"], "%Y-%m-%d %H:%M"),
                  decided=local_time(found["decided_at"], "%Y-%m-%d %H:%M")
                  if found["decided_at"] else None, center=node().center_id)
