"""National monitoring: every center on one screen, a fragment for live refresh, and a
center's day (hq/monitoring.py computes; this module only renders)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from hq import monitoring
from hq.console import actions, nav, security

bp = Blueprint("monitoring", __name__, url_prefix="/monitoring")


def _audit(action: str, target: str | None) -> None:
    """Record a read of the monitoring screens."""
    account = security.current_account()
    assert account is not None
    with security.store().use() as db, db.transaction() as tx:
        actions.record(tx, account["username"], action, target, "ok", security.client())


@bp.get("/")
@security.screen(nav.MONITORING_ROLES)
def index() -> str:
    """Every center with now-serving, waiting, breaches, served, ratings, freshness."""
    with security.store().use() as db:
        rows = monitoring.centers(db)
    _audit("view_monitoring", None)
    return render_template("monitoring.html", rows=rows)


@bp.get("/table")
@security.screen(nav.MONITORING_ROLES)
def table() -> str:
    """The centers table alone, fetched every minute by monitoring.js (not audited)."""
    with security.store().use() as db:
        rows = monitoring.centers(db)
    return render_template("monitoring_table.html", rows=rows)


@bp.get("/center/<center_id>")
@security.screen(nav.MONITORING_ROLES)
def center(center_id: str) -> str:
    """One center's day: by hour, per service against its standard, counters, comments."""
    with security.store().use() as db:
        detail = monitoring.center_detail(db, center_id)
    if detail is None:
        abort(404)
    _audit("view_center", center_id)
    return render_template("monitoring_center.html", center_id=center_id, **detail)
