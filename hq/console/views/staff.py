"""Center staff: create accounts with a node role, reset a password, disable an account.

hq/console/center_staff.py does the work and publishes each change downstream to the
center's nodes. A new or reset password is shown once on the result page (never stored in
clear, never logged or audited). Fleet administrators and admins act; auditors read.
Every action is audited, refused attempts too.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from flask_babel import gettext, lazy_gettext

from hq.console import actions, center_staff, nav, security
from hq.console.center_staff import StaffError

bp = Blueprint("staff", __name__, url_prefix="/staff")
ROLE_NAMES = {
    "receptionist": lazy_gettext("Receptionist"), "operator": lazy_gettext("Operator"),
    "supervisor": lazy_gettext("Supervisor"), "manager": lazy_gettext("Manager"),
    "volunteer": lazy_gettext("Volunteer"), "technician": lazy_gettext("Technician"),
    "auditor": lazy_gettext("Auditor"), "kiosk": lazy_gettext("Kiosk"),
    "display": lazy_gettext("Display board"),
}
MESSAGES = {
    "bad_center": lazy_gettext("Choose a center."),
    "bad_username": lazy_gettext("The username must be 2 to 40 lower-case letters, digits, "
                                 "dots, dashes or underscores."),
    "bad_full_name": lazy_gettext("Give the full name (at most 120 characters)."),
    "bad_role": lazy_gettext("Choose one of the roles."),
    "bad_language": lazy_gettext("Choose English or Urdu."),
    "username_taken": lazy_gettext("This center already has an account with this username."),
    "no_node": lazy_gettext("This center has no enrolled node to send the account to."),
    "unknown_account": lazy_gettext("No such account."),
}
NO_STORE = {"Cache-Control": "no-store"}


def _actor() -> str:
    """The signed-in account's name (views are guarded by `security.screen`)."""
    account = security.current_account()
    assert account is not None
    return str(account["username"])


def _audit(action: str, target: str | None, outcome: str, detail: str | None) -> None:
    """One audited staff action of the signed-in account (never a password)."""
    with security.store().use() as db, db.transaction() as tx:
        actions.record(tx, _actor(), action, target, outcome, security.client(), detail)


def _page(status: int = 200, **extra: Any) -> tuple[str, int]:
    """The list of published accounts, with the forms for those who may act."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db:
        staff, centers = center_staff.listing(db), center_staff.centers(db)
    return render_template("staff.html", staff=staff, centers=centers, form=request.form,
                           roles=ROLE_NAMES, can_act=account["role"] in nav.STAFF_ADMIN_ROLES,
                           **extra), status


def _refused(action: str, target: str | None, exc: StaffError) -> tuple[str, int]:
    """Audit a refused request and show the form again with the reason."""
    _audit(action, target, "refused", exc.code)
    return _page(400, error=str(MESSAGES.get(exc.code, gettext("The request was refused."))))


def _shown(row: dict[str, Any], password: str, nodes: int) -> tuple[str, int, dict[str, str]]:
    """The one-time password page (not cached by the browser)."""
    return render_template("staff_password.html", row=row, password=password,
                           nodes=nodes), 200, NO_STORE


@bp.get("/")
@security.screen(nav.STAFF_ROLES)
def index() -> tuple[str, int]:
    """Accounts HQ has published to centers; forms for fleet administrators and admins."""
    _audit("view_center_staff", None, "ok", None)
    return _page()


@bp.post("/create")
@security.screen(nav.STAFF_ADMIN_ROLES)
def create() -> tuple[str, int] | tuple[str, int, dict[str, str]]:
    """Create an account and show its one-time password once."""
    form = {name: request.form.get(name, "").strip()[:200]
            for name in ("center_id", "username", "full_name", "role", "language")}
    target = f"{form['center_id']}/{form['username']}"[:200]
    try:
        with security.store().use() as db:
            row, password, nodes = center_staff.create(
                db, form["center_id"], form["username"], form["full_name"], form["role"],
                form["language"] or "en")
    except StaffError as exc:
        return _refused("create_center_staff", target, exc)
    _audit("create_center_staff", target, "ok",
           f"id {row['id']}, role {row['role']}, version 1, sent to {nodes} node(s)")
    return _shown(row, password, nodes)


@bp.post("/reset")
@security.screen(nav.STAFF_ADMIN_ROLES)
def reset() -> tuple[str, int] | tuple[str, int, dict[str, str]]:
    """A new one-time password for an account, shown once."""
    staff_id = request.form.get("staff_id", "").strip()[:64]
    try:
        with security.store().use() as db:
            row, password, nodes = center_staff.reset_password(db, staff_id)
    except StaffError as exc:
        return _refused("reset_center_staff_password", staff_id or None, exc)
    _audit("reset_center_staff_password", f"{row['center_id']}/{row['username']}", "ok",
           f"id {staff_id}, version {row['version']}, sent to {nodes} node(s)")
    return _shown(row, password, nodes)


@bp.post("/disable")
@security.screen(nav.STAFF_ADMIN_ROLES)
def disable() -> tuple[str, int]:
    """Disable an account at its center."""
    staff_id = request.form.get("staff_id", "").strip()[:64]
    try:
        with security.store().use() as db:
            row, nodes = center_staff.disable(db, staff_id)
    except StaffError as exc:
        return _refused("disable_center_staff", staff_id or None, exc)
    target = f"{row['center_id']}/{row['username']}"
    _audit("disable_center_staff", target, "ok",
           f"id {staff_id}, version {row['version']}, sent to {nodes} node(s)")
    return _page(notice=gettext("%(account)s is disabled; the change was sent to %(nodes)d "
                                "node(s).", account=target, nodes=nodes))
