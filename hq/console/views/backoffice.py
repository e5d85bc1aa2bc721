"""The agency back office: inbox, decisions (single and bulk) and the CSV export.

An agency officer sees and decides their own agency's applications only: the inbox
query is scoped, asking for another agency's inbox (`?agency=`) is refused with 403,
and a decision on another agency's reference (or an unknown one) is refused with 404
before anything is sent; both are audited. Admins choose any agency;
auditors read. Every decision is a console action (`decide`, outcome `queued` or the
refusal's code); showing citizens' names is audited per citizen in hq_pii_reads.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext, lazy_gettext
from werkzeug.wrappers import Response as BaseResponse

from hq import decisions
from hq.console import actions, backoffice, nav, security
from hq.decisions import DecisionRefused
from hq.store import HQDatabase
from sync.merge import DECISION_REASON_MAX

bp = Blueprint("backoffice", __name__, url_prefix="/backoffice")
STATUS_NAMES = {"submitted": lazy_gettext("submitted"), "in_review": lazy_gettext("in review"),
                "ready": lazy_gettext("ready"), "rejected": lazy_gettext("rejected"),
                "collected": lazy_gettext("collected")}
CSV_HEADER = ("reference", "agency", "center", "node", "service", "status", "created_at",
              "age_days", "standard_days", "documents_missing", "outcome", "outcome_reason")


def _account() -> dict[str, Any]:
    """The signed-in account (the screen guard ran)."""
    account = security.current_account()
    assert account is not None
    return account


def _agency(account: dict[str, Any]) -> str | None:
    """The agency in view: an officer's own, else the one chosen (None: all).

    An officer asking for another agency (`?agency=`) is refused with 403, audited.
    """
    asked = request.args.get("agency", "").strip()
    if account["role"] != "agency_officer":
        return asked or None
    own = str(account["agency"])
    if asked and asked.lower() != own.lower():
        with security.store().use() as db, db.transaction() as tx:
            actions.record(tx, account["username"], "view_backoffice", asked[:200],
                           "out_of_scope", security.client())
        abort(403)
    return own


def _filters() -> tuple[str | None, str | None]:
    """The center and service filters asked for."""
    return (request.args.get("center", "").strip() or None,
            request.args.get("service", "").strip() or None)


@bp.get("/")
@security.screen(nav.BACKOFFICE_ROLES)
def index() -> str:
    """The inbox, oldest first, with citizens' names (each read audited)."""
    account = _account()
    agency, (center, service) = _agency(account), _filters()
    with security.store().use() as db:
        rows = backoffice.inbox(db, agency, center, service)
        names = backoffice.citizens(db, account["username"], rows)
        choices = backoffice.filter_values(db, agency if account["role"] ==
                                           "agency_officer" else None)
        with db.transaction() as tx:
            actions.record(tx, account["username"], "view_backoffice", agency, "ok",
                           security.client())
    return render_template("backoffice.html", rows=rows, names=names, choices=choices,
                           agency=agency, center=center, service=service,
                           can_decide=account["role"] in nav.DECIDE_ROLES,
                           status_names=STATUS_NAMES, reason_max=DECISION_REASON_MAX)


def refusal_text(reference: str, status: str, exc: DecisionRefused) -> str:
    """A refused decision in the reader's language."""
    known = STATUS_NAMES.get(exc.known or "", exc.known or "")
    wanted = STATUS_NAMES.get(status, status)
    texts = {
        "missing_reason": gettext("%(ref)s: a rejection needs a reason; nothing sent.",
                                  ref=reference),
        "bad_reason": gettext("%(ref)s: a reason must be 1 to %(n)s printable characters on "
                              "one line; nothing sent.", ref=reference, n=DECISION_REASON_MAX),
        "unknown_status": gettext("%(ref)s: the back office decides ready or rejected only.",
                                  ref=reference),
        "center_status": gettext("%(ref)s: the back office decides ready or rejected only.",
                                 ref=reference),
        "unknown_reference": gettext("%(ref)s: HQ has no application with this reference "
                                     "yet.", ref=reference),
        "several_nodes": gettext("%(ref)s is held by several nodes; nothing sent.",
                                 ref=reference),
        "already": gettext("%(ref)s is already %(status)s, or a decision to it is queued; "
                           "nothing sent.", ref=reference, status=wanted),
        "no_change": gettext("%(ref)s is %(known)s; a decision cannot change it to "
                             "%(status)s.", ref=reference, known=known, status=wanted),
        "backwards": gettext("%(ref)s is %(known)s; a decision cannot change it to "
                             "%(status)s.", ref=reference, known=known, status=wanted),
    }
    return texts.get(exc.code, gettext("%(ref)s: the decision was refused; nothing sent.",
                                       ref=reference))


@bp.post("/decide")
@security.screen(nav.DECIDE_ROLES)
def decide() -> BaseResponse:
    """Decide the ticked applications (or the one whose button was pressed)."""
    account = _account()
    only = request.form.get("only", "").strip()
    references = [only] if only else [r.strip() for r in request.form.getlist("reference")
                                      if r.strip()]
    status = request.form.get("status", "")
    reason = request.form.get("reason", "").strip() or None
    if not references:
        flash(gettext("Tick at least one application."), "error")
        return redirect(url_for(".index"))
    agency = str(account["agency"]) if account["role"] == "agency_officer" else None
    with security.store().use() as db:
        outside = [r for r in references if not backoffice.in_scope(db, agency, r)]
        if outside:
            with db.transaction() as tx:
                for reference in outside:
                    actions.record(tx, account["username"], "decide", reference,
                                   "out_of_scope", security.client())
            abort(404)
        for reference in references:
            _decide_one(db, account["username"], reference, status, reason)
    return redirect(url_for(".index", agency=request.args.get("agency"),
                            center=request.args.get("center"),
                            service=request.args.get("service")))


def _decide_one(db: HQDatabase, actor: str, reference: str, status: str,
                reason: str | None) -> None:
    """Publish one decision, audit it and flash what happened."""
    try:
        queued = decisions.publish(db, reference, status, reason)
        outcome = "queued"
        flash(gettext("%(ref)s: decision %(status)s queued for node %(node)s.",
                      ref=reference, status=STATUS_NAMES.get(status, status),
                      node=queued.node_id), "ok")
    except DecisionRefused as exc:
        outcome = f"refused:{exc.code}"
        flash(refusal_text(reference, status, exc), "error")
    with db.transaction() as tx:
        actions.record(tx, actor, "decide", f"{reference} -> {status}"[:200], outcome,
                       security.client())


def safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula (node text is untrusted)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.get("/export.csv")
@security.screen(nav.BACKOFFICE_ROLES)
def export() -> Response:
    """The inbox with the same filters as CSV (no citizen data), audited."""
    account = _account()
    agency, (center, service) = _agency(account), _filters()
    with security.store().use() as db:
        rows = backoffice.inbox(db, agency, center, service)
        with db.transaction() as tx:
            actions.record(tx, account["username"], "export_backoffice", agency, "ok",
                           security.client())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in rows:
        outcome = row["outcome"] or {}
        cells = (row["reference"], row["agency_code"], row["center_id"], row["node_id"],
                 row["service_code"], row["status"], row["created_at"], row["age_days"],
                 row["standard_days"], " ".join(d["code"] for d in row["documents"]
                                                if not d["seen"]),
                 outcome.get("state"), outcome.get("refusal_detail"))
        writer.writerow([safe_cell(v) for v in cells])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=backoffice-inbox.csv"})
