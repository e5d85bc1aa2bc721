"""The audit of console actions, for auditors and admins."""

from __future__ import annotations

from flask import Blueprint, render_template

from hq.console import actions, nav, security

bp = Blueprint("actions", __name__, url_prefix="/actions")


@bp.get("/")
@security.screen(nav.AUDIT_ROLES)
def index() -> str:
    """Newest console actions first (reading them is an action too)."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db, db.transaction() as tx:
        actions.record(tx, account["username"], "view_actions", None, "ok", security.client())
        rows = actions.recent(tx)
    return render_template("actions.html", rows=rows)
