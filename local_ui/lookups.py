"""Read helpers shared by the screens: catalog names, local times, a ticket's services."""

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


def services_named(db: Database) -> dict[str, dict[str, Any]]:
    """Every service (active or not) by code: names survive a catalog change."""
    return {r["code"]: r for r in db.query(
        "SELECT code, agency_code, name_en, name_ur, standard_minutes FROM services")}


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


def ticket_services(db: Database, ticket_id: str) -> list[dict[str, Any]]:
    """The services of a ticket in serving order, with their names."""
    return list(db.query(
        "SELECT ts.*, s.name_en, s.name_ur FROM ticket_services ts "
        "JOIN services s ON s.code = ts.service_code WHERE ts.ticket_id = ? "
        "ORDER BY ts.position", [ticket_id]))


def counters_by_id(db: Database) -> dict[str, str]:
    """Counter names by id."""
    return {r["id"]: r["name"] for r in db.query("SELECT id, name FROM counters")}


def staff_names(db: Database) -> dict[str, str]:
    """Staff full names by id."""
    return {r["id"]: r["full_name"] for r in db.query("SELECT id, full_name FROM staff")}
