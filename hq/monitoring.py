"""National monitoring: every center's day from the projections and its nodes' status.

Values are only ever what HQ received: the projections (today's synced tickets,
services, counters, feedback) and the newest live summary a node's status message
carried (sync/agent.py). An offline center shows its last known state with its age;
nothing is estimated.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hq.store import HQDatabase

ONLINE_WITHIN_S = 180  # a status older than three status periods is not "online"
LIVE_KEYS = ("waiting", "longest_wait_s", "now_serving", "counters_open", "breaches",
             "served", "mean_rating")


def parse_time(text: str | None) -> datetime | None:
    """A stored ISO time (…Z) as an aware datetime; None when missing or unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _nodes(db: HQDatabase) -> dict[str, list[dict[str, Any]]]:
    """Not-revoked nodes per center, freshest first, with their decoded status."""
    out: dict[str, list[dict[str, Any]]] = {}
    for node_id, center, seen, text in db.execute(
            "SELECT node_id, center_id, last_seen, status FROM hq_nodes WHERE revoked = 0 "
            "ORDER BY last_seen DESC").fetchall():
        try:
            status = json.loads(text) if text else {}
        except ValueError:
            status = {}
        out.setdefault(center, []).append({"node_id": node_id, "last_seen": seen,
                                           "status": status if isinstance(status, dict)
                                           else {}})
    return out


def _projected(db: HQDatabase, center: str, day: str) -> dict[str, Any]:
    """Today's figures of one center from the projections."""
    waiting, oldest = db.execute(
        "SELECT count(*), min(enqueued_at) FROM hq_tickets WHERE center_id = ? AND "
        "business_date = ? AND status = 'waiting'", [center, day]).fetchone()
    serving = [r[0] for r in db.execute(
        "SELECT number FROM hq_tickets WHERE center_id = ? AND business_date = ? AND "
        "status = 'called' ORDER BY number", [center, day]).fetchall()]
    served = db.execute("SELECT count(*) FROM hq_tickets WHERE center_id = ? AND "
                        "business_date = ? AND status = 'done'", [center, day]).fetchone()[0]
    opened = db.execute("SELECT count(*) FROM hq_counters WHERE center_id = ? AND "
                        "state = 'open'", [center]).fetchone()[0]
    mean = db.execute("SELECT avg(f.rating) FROM hq_feedback f JOIN hq_tickets t ON "
                      "t.id = f.ticket_id WHERE t.center_id = ? AND t.business_date = ?",
                      [center, day]).fetchone()[0]
    return {"waiting": waiting, "oldest_waiting_since": oldest, "now_serving": serving,
            "counters_open": opened, "served": served,
            "mean_rating": round(float(mean), 2) if mean is not None else None}


def center_row(db: HQDatabase, center: str, nodes: list[dict[str, Any]], day: str,
               now: datetime) -> dict[str, Any]:
    """One center: projected figures, overlaid by the newest live summary, and freshness."""
    fresh = nodes[0]
    seen = parse_time(fresh["last_seen"])
    age = round((now - seen).total_seconds()) if seen else None
    online = any(n["status"].get("state") == "online" for n in nodes) and \
        age is not None and age <= ONLINE_WITHIN_S
    row = {"center_id": center, "online": online, "last_seen": fresh["last_seen"],
           "age_s": age, "nodes": [n["node_id"] for n in nodes],
           "backlog": sum(n["status"].get("backlog") or 0 for n in nodes),
           "sync_lag_s": max(n["status"].get("oldest_unsent_age_s") or 0 for n in nodes),
           "longest_wait_s": None, "breaches": None, "live": False,
           **_projected(db, center, day)}
    live = next((n["status"]["live"] for n in nodes
                 if isinstance(n["status"].get("live"), dict)
                 and n["status"]["live"].get("business_date") == day), None)
    if live is not None:
        row.update({k: live[k] for k in LIVE_KEYS if k in live})
        row["live"] = True
    elif row["oldest_waiting_since"] and online:
        since = parse_time(row["oldest_waiting_since"])
        row["longest_wait_s"] = round((now - since).total_seconds()) if since else None
    return row


def centers(db: HQDatabase, day: str | None = None,
            now: datetime | None = None) -> list[dict[str, Any]]:
    """Every center with at least one enrolled node, by center id."""
    now = now or datetime.now(UTC)
    day = day or now.strftime("%Y-%m-%d")
    return [center_row(db, center, nodes, day, now)
            for center, nodes in sorted(_nodes(db).items())]


def _minutes(start: str | None, end: str | None) -> float | None:
    """Minutes between two stored times; None when either is missing."""
    a, b = parse_time(start), parse_time(end)
    return (b - a).total_seconds() / 60 if a and b else None


def drill(db: HQDatabase, center: str, standards: dict[str, Any], day: str
          ) -> dict[str, Any]:
    """One center's day: by hour, per service against its standard, per counter, comments."""
    hours: dict[str, dict[str, int]] = {}
    for issued, completed in db.execute(
            "SELECT issued_at, completed_at FROM hq_tickets WHERE center_id = ? AND "
            "business_date = ?", [center, day]).fetchall():
        for key, at in (("issued", issued), ("served", completed)):
            if at and len(at) >= 13:
                hours.setdefault(at[11:13], {"issued": 0, "served": 0})[key] += 1
    services: dict[str, dict[str, Any]] = {}
    counters: dict[str, int] = {}
    for code, counter, called, completed in db.execute(
            "SELECT s.service_code, s.counter_id, s.called_at, s.completed_at FROM "
            "hq_ticket_services s JOIN hq_tickets t ON t.id = s.ticket_id WHERE "
            "t.center_id = ? AND t.business_date = ?", [center, day]).fetchall():
        took = _minutes(called, completed)
        if took is None:
            continue
        standard = standards.get(code)
        entry = services.setdefault(code, {"served": 0, "total_min": 0.0, "over": 0,
                                           "standard": standard})
        entry["served"] += 1
        entry["total_min"] += took
        entry["over"] += isinstance(standard, int | float) and took > standard
        if counter:
            counters[counter] = counters.get(counter, 0) + 1
    for entry in services.values():
        entry["mean_min"] = round(entry.pop("total_min") / entry["served"], 1)
    names = db.execute("SELECT id, name, state FROM hq_counters WHERE center_id = ? "
                       "ORDER BY name", [center]).fetchall()
    comments = db.execute(
        "SELECT f.created_at, f.rating, f.service_code, f.comment FROM hq_feedback f "
        "JOIN hq_tickets t ON t.id = f.ticket_id WHERE t.center_id = ? AND "
        "t.business_date = ? AND f.comment IS NOT NULL AND f.comment <> '' "
        "ORDER BY f.created_at DESC LIMIT 50", [center, day]).fetchall()
    return {"hours": sorted(hours.items()), "services": sorted(services.items()),
            "counters": [{"name": n, "state": s, "served": counters.get(i, 0)}
                         for i, n, s in names],
            "comments": [dict(zip(("at", "rating", "service", "comment"), c, strict=True))
                         for c in comments]}


def center_detail(db: HQDatabase, center: str, now: datetime | None = None
                  ) -> dict[str, Any] | None:
    """A center's row and its day; None for a center no node reports."""
    now = now or datetime.now(UTC)
    day = now.strftime("%Y-%m-%d")
    nodes = _nodes(db).get(center)
    if not nodes:
        return None
    live: dict[str, Any] = next((n["status"]["live"] for n in nodes
                                 if isinstance(n["status"].get("live"), dict)), {})
    standards = live.get("standards") if isinstance(live.get("standards"), dict) else {}
    return {"row": center_row(db, center, nodes, day, now),
            **drill(db, center, standards or {}, day)}
