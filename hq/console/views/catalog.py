"""Service catalog: edit HQ's draft, publish a new version, see which node runs which.

hq/console/catalog.py does the work. Fleet administrators and admins act; auditors and
monitoring officers read. Every action is audited, refused attempts too.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from flask_babel import gettext, lazy_gettext

from hq.console import actions, catalog, nav, security
from hq.console.catalog import CatalogError

bp = Blueprint("catalog", __name__, url_prefix="/catalog")
MESSAGES = {
    "nothing_sent": lazy_gettext("HQ has not sent a catalog yet: there is nothing to import."),
    "no_draft": lazy_gettext("Import the current catalog first."),
    "bad_code": lazy_gettext("The service code must be lower-case letters, digits or "
                             "underscores."),
    "bad_agency": lazy_gettext("Choose one of the agencies."),
    "bad_name": lazy_gettext("Give the English and Urdu names (at most 200 characters)."),
    "bad_minutes": lazy_gettext("Standard minutes must be a whole number from 1 to 480."),
    "bad_fee": lazy_gettext("The fee must be a whole number of rupees, 0 or more."),
    "bad_documents": lazy_gettext("Required documents: one known document code per line, "
                                  "each once."),
    "empty": lazy_gettext("The draft has no active service to publish."),
    "no_node": lazy_gettext("None of the chosen centers has an enrolled node."),
}
STATES = {"pending": lazy_gettext("Pending"), "applied": lazy_gettext("Applied"),
          "refused": lazy_gettext("Refused")}
FIELDS = ("code", "agency_code", "name_en", "name_ur", "standard_minutes", "fee_pkr",
          "documents", "active")


def _audit(action: str, target: str | None, outcome: str, detail: str | None) -> None:
    """One audited catalog action of the signed-in account."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db, db.transaction() as tx:
        actions.record(tx, str(account["username"]), action, target, outcome,
                       security.client(), detail)


def _page(status: int = 200, **extra: Any) -> tuple[str, int]:
    """The draft, the edit form and the versions table."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db:
        data = {"base": catalog.base(db), "services": catalog.services(db),
                "versions": catalog.versions(db), "centers": catalog.centers(db),
                "sent": catalog.newest_sent(db)}
    edit = extra.pop("edit", None)
    return render_template("catalog.html", **data, states=STATES, edit=edit or {},
                           can_act=account["role"] in nav.CATALOG_ADMIN_ROLES,
                           **extra), status


def _refused(action: str, target: str | None, exc: CatalogError,
             edit: dict[str, str] | None = None) -> tuple[str, int]:
    """Audit a refused request and show the page again with the reason."""
    _audit(action, target, "refused", exc.code)
    return _page(400, edit=edit,
                 error=str(MESSAGES.get(exc.code, gettext("The request was refused."))))


@bp.get("/")
@security.screen(nav.CATALOG_ROLES)
def index() -> tuple[str, int]:
    """The draft and the versions the nodes run; an edit form for those who may act."""
    _audit("view_catalog", None, "ok", None)
    code = request.args.get("edit", "").strip()[:64]
    with security.store().use() as db:
        found = [s for s in catalog.services(db) if s["code"] == code]
    edit = {**found[0], "documents": "\n".join(found[0]["documents"])} if found else None
    return _page(edit=edit)


@bp.post("/import")
@security.screen(nav.CATALOG_ADMIN_ROLES)
def import_current() -> tuple[str, int]:
    """Replace the draft with the newest catalog HQ sent."""
    try:
        with security.store().use() as db:
            version = catalog.import_current(db)
    except CatalogError as exc:
        return _refused("import_catalog", None, exc)
    _audit("import_catalog", str(version), "ok", f"draft from version {version}")
    return _page(notice=gettext("The draft now holds catalog version %(version)d.",
                                version=version))


@bp.post("/service")
@security.screen(nav.CATALOG_ADMIN_ROLES)
def save_service() -> tuple[str, int]:
    """Add or change one service of the draft."""
    form = {name: request.form.get(name, "")[:4000] for name in FIELDS}
    target = form["code"].strip()[:64] or None
    try:
        with security.store().use() as db:
            row = catalog.save_service(db, form)
    except CatalogError as exc:
        return _refused("edit_catalog_service", target, exc, edit=form)
    _audit("edit_catalog_service", target, "ok",
           f"agency {row['agency_code']}, {row['standard_minutes']} min, fee "
           f"{row['fee_pkr']}, {len(row['documents'])} document(s), active {row['active']}")
    return _page(notice=gettext("Service %(code)s saved in the draft.", code=row["code"]))


@bp.post("/publish")
@security.screen(nav.CATALOG_ADMIN_ROLES)
def publish() -> tuple[str, int]:
    """Send the draft as the next catalog version to all or the chosen centers."""
    everywhere = request.form.get("scope", "") == "all"
    chosen = None if everywhere else [c[:64] for c in request.form.getlist("center")][:500]
    target = "all" if chosen is None else ",".join(chosen)[:200]
    try:
        if chosen == []:
            raise CatalogError("no_node")
        with security.store().use() as db:
            version, nodes = catalog.publish(db, chosen)
    except CatalogError as exc:
        return _refused("publish_catalog", target, exc)
    _audit("publish_catalog", target, "ok", f"version {version}, sent to {nodes} node(s)")
    return _page(notice=gettext("Catalog version %(version)d was sent to %(nodes)d node(s).",
                                version=version, nodes=nodes))
