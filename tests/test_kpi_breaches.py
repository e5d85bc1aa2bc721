"""The dashboard's service-standard figures, computed beside the KPIs (edge_node/domain/kpi.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge_node.domain import kpi

NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def seg(called: str, completed: str | None, status: str, standard: int = 10,
        counter: str | None = "c1") -> dict[str, Any]:
    """A service segment as kpi.day_segments returns it (the fields read here)."""
    return {"called_at": f"2025-03-01T{called}:00.000000Z", "status": status,
            "completed_at": f"2025-03-01T{completed}:00.000000Z" if completed else None,
            "standard_minutes": standard, "counter_id": counter, "staff_id": None}


def test_breaches_worst_first_with_ongoing_in_whole_minutes() -> None:
    """Finished over the standard, still serving over it (whole minutes), worst first;
    within the standard or waiting: none."""
    segments = [seg("09:00", "09:12", "done"), seg("09:30", None, "serving"),
                seg("09:40", "09:45", "done"), seg("09:10", None, "waiting")]
    found = kpi.breaches(segments, NOW.replace(second=30), limit=20)
    assert [(b["took_min"], b["ongoing"]) for b in found] == [(30, True), (12.0, False)]
    assert kpi.breaches(segments, NOW, limit=1)[0]["took_min"] == 30


def test_served_by_counts_and_median() -> None:
    """Finished segments per counter: count and median minutes; no counter: left out."""
    segments = [seg("09:00", "09:04", "done"), seg("09:10", "09:16", "done"),
                seg("09:20", "09:30", "done"), seg("09:30", None, "serving"),
                seg("09:00", "09:01", "done", counter=None)]
    assert kpi.served_by(segments, "counter_id") == {"c1": {"served": 3, "median_min": 6.0}}
