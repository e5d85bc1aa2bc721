"""Center KPIs: waiting now, longest wait, wait/service time percentiles,
service-standard compliance, no-shows, transfers, satisfaction.

Computed from tickets, their service segments and events; no citizen data.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.ids import new_id, parse_iso


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _seconds(start: str, end: str) -> float:
    """Seconds between two stored timestamps."""
    return (parse_iso(end) - parse_iso(start)).total_seconds()


def _waiting_now(db: Database, now: datetime) -> list[dict[str, Any]]:
    """Per queue: tickets waiting and the longest current wait in seconds."""
    out = []
    for row in db.query(
        "SELECT a.code, a.queue_prefix, count(t.id) AS waiting, min(t.enqueued_at) AS oldest "
        "FROM agencies a LEFT JOIN tickets t ON t.queue_code = a.code AND t.status = 'waiting' "
        "GROUP BY a.code ORDER BY a.position"
    ):
        oldest = row.pop("oldest")
        row["longest_wait_s"] = round((now - parse_iso(oldest)).total_seconds(), 1) \
            if oldest else 0.0
        out.append(row)
    return out


def day_segments(db: Database, day: str) -> list[dict[str, Any]]:
    """Service segments of a day that reached a counter, with ticket number and standard."""
    return list(db.query(
        "SELECT ts.*, t.number, s.standard_minutes FROM ticket_services ts "
        "JOIN tickets t ON t.id = ts.ticket_id JOIN services s ON s.code = ts.service_code "
        "WHERE t.business_date = ? AND ts.called_at IS NOT NULL", [day]))


def _segments(db: Database, day: str) -> tuple[list[float], list[float], int, int]:
    """Wait times, service times, served count and count within the standard, of a day."""
    waits, services, within = [], [], 0
    for seg in day_segments(db, day):
        waits.append(_seconds(seg["enqueued_at"], seg["called_at"]))
        if seg["completed_at"]:
            took = _seconds(seg["called_at"], seg["completed_at"])
            services.append(took)
            within += took <= seg["standard_minutes"] * 60
    return waits, services, len(services), within


def _event_counts(db: Database, day: str) -> dict[str, int]:
    """How many tickets of the day had each event."""
    rows = db.query(
        "SELECT e.event, count(DISTINCT e.ticket_id) AS n FROM ticket_events e "
        "JOIN tickets t ON t.id = e.ticket_id WHERE t.business_date = ? GROUP BY e.event", [day])
    return {r["event"]: r["n"] for r in rows}


def _ratings(db: Database, day: str) -> dict[str, Any]:
    """Rating spread and satisfaction % (ratings of 4 or 5) for the day."""
    spread = {str(i): 0 for i in range(1, 6)}
    for row in db.query(
        "SELECT f.rating, count(*) AS n FROM feedback f JOIN tickets t ON t.id = f.ticket_id "
        "WHERE t.business_date = ? GROUP BY f.rating", [day]
    ):
        spread[str(row["rating"])] = row["n"]
    total = sum(spread.values())
    happy = spread["4"] + spread["5"]
    return {"ratings": spread, "feedback_count": total,
            "satisfaction_pct": round(100 * happy / total, 1) if total else None}


def compute(db: Database, day: str, now: datetime) -> dict[str, Any]:
    """All KPIs of one business day (waiting figures are as of `now`)."""
    waits, services, served, within = _segments(db, day)
    events = _event_counts(db, day)
    missing = db.execute("SELECT count(*) FROM visits WHERE business_date = ? AND status = "
                         "'missing_documents'", [day]).fetchone()[0]
    return {
        "business_date": day,
        "queues": _waiting_now(db, now),
        "issued": events.get("issued", 0),
        "served": served,
        "completed_visits": events.get("completed", 0),
        "no_shows": events.get("no_show", 0),
        "transfers": events.get("transferred", 0),
        "missing_documents": missing,
        "wait_p50_s": percentile(waits, 50), "wait_p90_s": percentile(waits, 90),
        "service_p50_s": percentile(services, 50), "service_p90_s": percentile(services, 90),
        "within_standard_pct": round(100 * within / served, 1) if served else None,
        **_ratings(db, day),
    }


def breaches(segments: list[dict[str, Any]], now: datetime, limit: int
             ) -> list[dict[str, Any]]:
    """Services over their standard, worst first: finished ones, and ones still at a
    counter (counted in whole minutes so far); `took_min` and `ongoing` added."""
    out = []
    for seg in segments:
        took: float
        if seg["completed_at"]:
            took = _seconds(seg["called_at"], seg["completed_at"]) / 60
        elif seg["status"] == "serving":
            took = int((now - parse_iso(seg["called_at"])).total_seconds() // 60)
        else:
            continue
        if took > seg["standard_minutes"]:
            out.append({**seg, "took_min": round(took, 1), "ongoing": not seg["completed_at"]})
    out.sort(key=lambda s: s["took_min"] - s["standard_minutes"], reverse=True)
    return out[:limit]


def served_by(segments: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Served count and median service minutes grouped by `counter_id` or `staff_id`."""
    groups: dict[str, list[float]] = {}
    for seg in segments:
        if seg["completed_at"] and seg[key]:
            groups.setdefault(seg[key], []).append(
                _seconds(seg["called_at"], seg["completed_at"]) / 60)
    return {k: {"served": len(v), "median_min": round(statistics.median(v), 1)}
            for k, v in groups.items()}


def staff_ratings(db: Database, day: str) -> dict[str, dict[str, Any]]:
    """Feedback count and mean rating per staff member for a day."""
    rows = db.query("SELECT f.staff_id, count(*) AS n, avg(f.rating) AS mean FROM feedback f "
                    "JOIN tickets t ON t.id = f.ticket_id WHERE t.business_date = ? "
                    "GROUP BY f.staff_id", [day])
    return {r["staff_id"]: {"ratings": r["n"], "mean": round(r["mean"], 1)} for r in rows
            if r["staff_id"]}


def store_snapshot(db: Database, day: str, now: str, settings: Settings) -> None:
    """Save (or replace) the day's KPI snapshot as a synced record."""
    data = compute(db, day, parse_iso(now))
    existing = db.execute("SELECT id FROM kpi_snapshots WHERE business_date = ?",
                          [day]).fetchone()
    row = {"id": existing[0] if existing else new_id(), "business_date": day,
           "data": json.dumps(data, ensure_ascii=False), "created_at": now}
    db.table("kpi_snapshots").upsert(row, pk="id")


def live(db: Database, day: str, now: datetime) -> dict[str, Any]:
    """The small live summary the node's status message carries (counts and ticket
    numbers only, no citizen data): waiting, longest wait, now serving, counters open,
    service-standard breaches, served today, mean rating, standards (minutes)."""
    oldest = db.execute("SELECT count(*), min(enqueued_at) FROM tickets WHERE "
                        "business_date = ? AND status = 'waiting'", [day]).fetchone()
    serving = [r[0] for r in db.execute(
        "SELECT number FROM tickets WHERE business_date = ? AND status = 'called' "
        "ORDER BY called_at", [day]).fetchall()]
    segments = day_segments(db, day)
    mean = db.execute("SELECT avg(f.rating) FROM feedback f JOIN tickets t ON t.id = "
                      "f.ticket_id WHERE t.business_date = ?", [day]).fetchone()[0]
    return {
        "waiting": oldest[0],
        "longest_wait_s": round((now - parse_iso(oldest[1])).total_seconds()) if oldest[1]
        else 0,
        "now_serving": serving[:20],
        "counters_open": db.execute("SELECT count(*) FROM counters WHERE state = 'open'"
                                    ).fetchone()[0],
        "breaches": len(breaches(segments, now, len(segments))),
        "served": sum(1 for seg in segments if seg["completed_at"]),
        "mean_rating": round(mean, 2) if mean is not None else None,
        "standards": {r[0]: r[1] for r in db.execute(
            "SELECT code, standard_minutes FROM services").fetchall()},
        "business_date": day,
    }
