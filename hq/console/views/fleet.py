"""The fleet screen: every node's center, version, last seen, backlog, certificate, chain."""

from __future__ import annotations

from flask import Blueprint, render_template

from hq.console import actions, nav, security
from hq.fleet import fleet

bp = Blueprint("fleet", __name__, url_prefix="/fleet")


@bp.get("/")
@security.screen(nav.FLEET_ROLES)
def index() -> str:
    """One row per node (hq/fleet.py), audited as a read."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db:
        rows = fleet(db)
        with db.transaction() as tx:
            actions.record(tx, account["username"], "view_fleet", None, "ok",
                           security.client())
    return render_template("fleet.html", rows=rows)
