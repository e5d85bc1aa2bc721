"""Helpers shared by the screens: the catalog by code, local times, minutes elapsed."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from edge_node.domain.catalog import list_catalog
from edge_node.ids import parse_iso
from local_ui.security import node


def catalog(db: Database) -> dict[str, Any]:
    """The catalog with services, documents and priority classes by code."""
    data = list_catalog(db)
    data["services_by_code"] = {s["code"]: s for a in data["agencies"] for s in a["services"]}
    data["documents_by_code"] = {d["code"]: d for d in data["documents"]}
    data["priorities_by_code"] = {p["code"]: p for p in data["priority_classes"]}
    return data


def local_time(stamp: str | None, fmt: str = "%H:%M") -> str:
    """A stored UTC timestamp as the center's wall-clock time."""
    if not stamp:
        return ""
    zone = ZoneInfo(node().settings["timezone"])
    return parse_iso(stamp).astimezone(zone).strftime(fmt)


def minutes_since(stamp: str | None) -> int:
    """Whole minutes from a stored timestamp to now."""
    if not stamp:
        return 0
    return int((node().now() - parse_iso(stamp)).total_seconds() // 60)
