"""The supervisor's dashboard: live KPIs, service-standard breaches, counter and staff
figures, and two small charts (waiting per queue, rating spread)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from werkzeug.wrappers import Response

from edge_node.domain import counters, kpi
from edge_node.domain.catalog import services_by_code
from edge_node.domain.roles import AUDITORS, SUPERVISORS
from edge_node.domain.staff import staff_names
from local_ui import charts, live
from local_ui.security import node, screen
from local_ui.web import render

bp = Blueprint("supervisor", __name__)
READERS = SUPERVISORS | AUDITORS
BREACH_LIMIT = 20


def dashboard_data() -> dict[str, Any]:
    """Everything the dashboard shows, from the reader connection."""
    n = node()
    db, day = n.reader(), n.today()
    figures = kpi.compute(db, day, n.now())
    segments = kpi.day_segments(db, day)
    by_counter = kpi.served_by(segments, "counter_id")
    by_staff = kpi.served_by(segments, "staff_id")
    ratings, names = kpi.staff_ratings(db, day), staff_names(db)
    staff_rows = [{"name": names.get(sid, "?"), **by_staff.get(sid, {"served": 0,
                   "median_min": None}), **ratings.get(sid, {"ratings": 0, "mean": None})}
                  for sid in sorted(set(by_staff) | set(ratings), key=lambda s: names.get(s, ""))]
    counter_rows = [{**c, **by_counter.get(c["id"], {"served": 0, "median_min": None})}
                    for c in counters.list_counters(db)]
    return {
        "kpi": figures, "breaches": kpi.breaches(segments, n.now(), BREACH_LIMIT),
        "services": services_by_code(db),
        "counter_rows": counter_rows, "staff_rows": staff_rows,
        "queue_chart": charts.bars([(q["queue_prefix"], q["waiting"])
                                    for q in figures["queues"]]),
        "rating_chart": charts.bars([(k, v) for k, v in figures["ratings"].items()]),
        "chart_w": charts.WIDTH, "chart_h": charts.HEIGHT,
    }


@bp.get("/supervisor")
@screen(READERS)
def dashboard() -> Response:
    """The dashboard; its body refreshes over SSE."""
    return render("supervisor.html", **dashboard_data())


@bp.get("/supervisor/live")
@screen(READERS)
def dashboard_live() -> Response:
    """SSE: the dashboard body whenever the figures change."""
    return live.stream(lambda: render_template("_supervisor_body.html", **dashboard_data()))
