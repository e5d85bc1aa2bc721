"""The supervisor's dashboard: live KPIs, service-standard breaches, counter and staff
figures, and two small charts (waiting per queue, rating spread)."""

from __future__ import annotations

import statistics
from typing import Any

from flask import Blueprint, render_template
from sqlite_utils import Database
from werkzeug.wrappers import Response

from edge_node.domain import counters, kpi
from edge_node.domain.roles import AUDITORS, SUPERVISORS
from edge_node.ids import parse_iso
from local_ui import charts, live
from local_ui.lookups import minutes_since, services_named, staff_names
from local_ui.security import node, screen
from local_ui.web import render

bp = Blueprint("supervisor", __name__)
READERS = SUPERVISORS | AUDITORS
BREACH_LIMIT = 20


def _took_s(segment: dict[str, Any]) -> float:
    """Seconds a service took at the counter."""
    return (parse_iso(segment["completed_at"]) - parse_iso(segment["called_at"])).total_seconds()


def _segments(db: Database, day: str) -> list[dict[str, Any]]:
    """Service segments of the day that reached a counter, with their standard."""
    return list(db.query(
        "SELECT ts.*, t.number, s.standard_minutes FROM ticket_services ts "
        "JOIN tickets t ON t.id = ts.ticket_id JOIN services s ON s.code = ts.service_code "
        "WHERE t.business_date = ? AND ts.called_at IS NOT NULL", [day]))


def _breaches(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Services over their standard: finished ones, and ones still at a counter."""
    out = []
    for seg in segments:
        limit = seg["standard_minutes"]
        if seg["completed_at"]:
            took = _took_s(seg) / 60
        elif seg["status"] == "serving":
            took = minutes_since(seg["called_at"])
        else:
            continue
        if took > limit:
            out.append({**seg, "took_min": round(took, 1), "ongoing": not seg["completed_at"]})
    out.sort(key=lambda s: s["took_min"] - s["standard_minutes"], reverse=True)
    return out[:BREACH_LIMIT]


def _per(segments: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Served count and median service minutes grouped by counter_id or staff_id."""
    groups: dict[str, list[float]] = {}
    for seg in segments:
        if seg["completed_at"] and seg[key]:
            groups.setdefault(seg[key], []).append(_took_s(seg) / 60)
    return {k: {"served": len(v), "median_min": round(statistics.median(v), 1)}
            for k, v in groups.items()}


def _staff_ratings(db: Database, day: str) -> dict[str, dict[str, Any]]:
    """Feedback count and mean rating per staff member for the day."""
    rows = db.query("SELECT f.staff_id, count(*) AS n, avg(f.rating) AS mean FROM feedback f "
                    "JOIN tickets t ON t.id = f.ticket_id WHERE t.business_date = ? "
                    "GROUP BY f.staff_id", [day])
    return {r["staff_id"]: {"ratings": r["n"], "mean": round(r["mean"], 1)} for r in rows
            if r["staff_id"]}


def dashboard_data() -> dict[str, Any]:
    """Everything the dashboard shows, from the reader connection."""
    n = node()
    db, day = n.reader(), n.today()
    figures = kpi.compute(db, day, n.now())
    segments = _segments(db, day)
    by_counter, by_staff = _per(segments, "counter_id"), _per(segments, "staff_id")
    ratings, names = _staff_ratings(db, day), staff_names(db)
    staff_rows = [{"name": names.get(sid, "?"), **by_staff.get(sid, {"served": 0,
                   "median_min": None}), **ratings.get(sid, {"ratings": 0, "mean": None})}
                  for sid in sorted(set(by_staff) | set(ratings), key=lambda s: names.get(s, ""))]
    counter_rows = [{**c, **by_counter.get(c["id"], {"served": 0, "median_min": None})}
                    for c in counters.list_counters(db)]
    return {
        "kpi": figures, "breaches": _breaches(segments), "services": services_named(db),
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
