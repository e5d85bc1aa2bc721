"""Reception: find or register the citizen, pick services and priority, check documents,
issue the ticket and print it (bilingual, with a QR code)."""

from __future__ import annotations

from typing import Any

import segno
from flask import Blueprint, abort, flash, request
from flask_babel import gettext
from markupsafe import Markup
from werkzeug.wrappers import Response

from edge_node import lifecycle
from edge_node.domain import citizens, visits
from edge_node.domain.roles import OPERATORS, RECEPTION
from edge_node.domain.tickets import ticket_services
from edge_node.errors import EdgeError, NotFoundError, ValidationError
from edge_node.replication import lookup
from local_ui import i18n
from local_ui.lookups import catalog, local_time
from local_ui.security import current_staff, node, screen
from local_ui.web import attempt, back, render

bp = Blueprint("reception", __name__)
TICKET_READERS = RECEPTION | OPERATORS
QR_SCALE = 4


def _find(cnic: str) -> tuple[dict[str, Any] | None, str | None, str]:
    """(citizen, error, where) for a CNIC typed at the desk.

    `where`: `here`; else, asked of HQ when online (edge_node/replication/lookup.py),
    `hq` (filled in here from HQ), `not_found` (not at HQ either) or `unavailable`
    (offline or no answer in time: register here, HQ links the records later).
    """
    n = node()
    try:
        return citizens.lookup(n.reader(), n.keys, cnic), None, "here"
    except NotFoundError:
        pass
    except ValidationError as exc:
        return None, i18n.error_text(exc), "here"
    outcome, found = lookup.ask_hq(n, lifecycle.current_agent(), citizens.parse_cnic(cnic).text,
                                   str((current_staff() or {}).get("id", "")))
    return found, None, "hq" if outcome == "found" else outcome


def _citizen(citizen_id: str | None) -> dict[str, Any] | None:
    """The citizen chosen for this visit, if any."""
    if not citizen_id:
        return None
    n = node()
    try:
        return citizens.get_citizen(n.reader(), n.keys, citizen_id)
    except EdgeError:
        return None


@bp.get("/reception")
@screen(RECEPTION)
def desk() -> Response:
    """Step 1: citizen and services; step 2 (services chosen): the document checklist."""
    cnic = request.args.get("cnic", "").strip()
    found, cnic_error, where = _find(cnic) if cnic else (None, None, "here")
    chosen = _citizen(request.args.get("citizen")) or found
    data = catalog(node().reader())
    picked = [c for c in request.args.getlist("services") if c in data["services_by_code"]]
    priority = request.args.get("priority", "normal")
    return render("reception.html", cnic=cnic, cnic_error=cnic_error, citizen=chosen, where=where,
                  searched=bool(cnic) and cnic_error is None, catalog=data, picked=picked,
                  priority=priority if priority in data["priorities_by_code"] else "normal")


@bp.post("/reception/citizens")
@screen(RECEPTION)
def register() -> Response:
    """Register a citizen (CNIC, name, optional phone) and select them for the visit."""
    n, actor = node(), dict(current_staff() or {})
    form = request.form
    now, keys = n.timestamp(), n.keys
    phone = form.get("phone", "").strip() or None
    created = attempt(lambda: n.write(lambda db: citizens.register(
        db, keys, cnic=form.get("cnic", ""), name=form.get("name", ""), phone=phone,
        id_kind=form.get("id_kind", "cnic"), actor=actor, now=now)))
    if created is None:
        return back("reception.desk", cnic=form.get("cnic", ""))
    flash(gettext("Citizen registered."), "ok")
    return back("reception.desk", citizen=created["id"])


@bp.post("/reception/visits")
@screen(RECEPTION)
def issue() -> Response:
    """Record the visit: a ticket when every document is there, else a missing-documents end."""
    n, actor = node(), dict(current_staff() or {})
    form = request.form
    services = form.getlist("services")
    data = catalog(n.reader())
    needed = [d for code in services if code in data["services_by_code"]
              for d in data["services_by_code"][code]["documents"]]
    present = set(form.getlist("documents"))
    missing = sorted({d for d in needed if d not in present})
    now, day = n.timestamp(), n.today()
    result = attempt(lambda: n.write(lambda db: visits.create_visit(
        db, services=services, priority=form.get("priority", "normal"),
        citizen_id=form.get("citizen_id") or None, missing_documents=missing,
        actor=actor, now=now, day=day)))
    if result is None:
        return back("reception.desk", services=services, citizen=form.get("citizen_id", ""))
    if result["ticket"] is None:
        flash(gettext("Visit ended: documents are missing (%(count)d). The citizen may come "
                      "back with them.", count=len(missing)), "error")
        return back("reception.desk")
    return back("reception.ticket", ticket_id=result["ticket"]["id"])


@bp.get("/tickets/<ticket_id>")
@screen(TICKET_READERS)
def ticket(ticket_id: str) -> Response:
    """The printable ticket: number, services and priority in English and Urdu, QR code."""
    db = node().reader()
    found = _ticket_or_404(ticket_id)
    data = catalog(db)
    return render("ticket.html", ticket=found, services=ticket_services(db, ticket_id),
                  priority=data["priorities_by_code"].get(found["priority"]),
                  issued=local_time(found["issued_at"], "%Y-%m-%d %H:%M"),
                  center=node().center_id,
                  qr=ticket_qr_svg(found))


def ticket_qr_svg(found: dict[str, Any]) -> Markup:
    """The ticket's QR code as inline SVG, made here (no network).

    It encodes `KHIDMAT:<center>:<number>:<ticket id>`; segno's output is paths only.
    """
    payload = f"KHIDMAT:{node().center_id}:{found['number']}:{found['id']}"
    svg = segno.make(payload, error="m").svg_inline(scale=QR_SCALE, dark="#000", light="#fff",
                                                     svgclass="qr", lineclass=None)
    return Markup(svg)  # noqa: S704 - generated by segno from a fixed-alphabet payload


def _ticket_or_404(ticket_id: str) -> dict[str, Any]:
    """A ticket by id, or a 404 page."""
    try:
        return visits.get_ticket(node().reader(), ticket_id)
    except NotFoundError:
        abort(404)
