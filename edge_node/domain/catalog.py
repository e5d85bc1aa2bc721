"""The service catalog: agencies (one queue each), services, documents, priority classes.

The catalog is HQ-owned and versioned; the seed version ships in
`edge_node/data/catalog.json` and is loaded by `edge-node init`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from sqlite_utils import Database

from edge_node.errors import NotFoundError, ValidationError
from edge_node.store import meta, sql


def load_seed() -> dict[str, Any]:
    """The catalog shipped with the package."""
    text = resources.files("edge_node.data").joinpath("catalog.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    check_catalog(data)
    return data


def check_catalog(data: dict[str, Any]) -> None:
    """Refuse a catalog whose references do not resolve."""
    documents = {d["code"] for d in data["documents"]}
    seen: set[str] = set()
    for agency in data["agencies"]:
        for service in agency["services"]:
            if service["code"] in seen:
                raise ValidationError(f"catalog: duplicate service code {service['code']}")
            seen.add(service["code"])
            unknown = set(service["documents"]) - documents
            if unknown:
                raise ValidationError(f"catalog: {service['code']} names unknown documents")


def apply_catalog(db: Database, data: dict[str, Any]) -> None:
    """Make the catalog tables match `data` (call inside a write transaction).

    Rows are upserted, never deleted: visits, tickets and applications keep
    pointing at them. A service missing from the new version becomes inactive.
    """
    db.table("documents").upsert_all(data["documents"], pk="code")
    db.table("priority_classes").upsert_all(data["priority_classes"], pk="code")
    db.execute("UPDATE services SET active = 0")
    for position, agency in enumerate(data["agencies"]):
        row = {k: agency[k] for k in ("code", "queue_prefix", "name_en", "name_ur")}
        db.table("agencies").upsert({**row, "position": position}, pk="code")
        db.table("services").upsert_all(_service_rows(agency), pk="code")
    meta.put(db, meta.CATALOG_VERSION_KEY, data["catalog_version"])


def _service_rows(agency: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the services table for one agency."""
    return [
        {
            "code": s["code"], "agency_code": agency["code"], "name_en": s["name_en"],
            "name_ur": s["name_ur"], "standard_minutes": s["standard_minutes"],
            "turnaround_days": s["turnaround_days"], "fees": json.dumps(s["fees"]),
            "documents": json.dumps(s["documents"]), "active": 1, "position": i,
        }
        for i, s in enumerate(agency["services"])
    ]


def get_service(db: Database, code: str) -> dict[str, Any]:
    """One active service with its agency's queue prefix, or NotFoundError."""
    found = sql.rows(
        db, "SELECT s.*, a.queue_prefix FROM services s JOIN agencies a "
        "ON a.code = s.agency_code WHERE s.code = ? AND s.active = 1", [code])
    if not found:
        raise NotFoundError(f"unknown service: {code}")
    row = found[0]
    row["fees"] = json.loads(row["fees"])
    row["documents"] = json.loads(row["documents"])
    return row


def priority_weight(db: Database, code: str) -> int:
    """Weight of a priority class, or ValidationError for an unknown class."""
    row = db.conn.execute("SELECT weight FROM priority_classes WHERE code = ?",
                          [code]).fetchone()
    if row is None:
        raise ValidationError(f"unknown priority class: {code}")
    return int(row[0])


def services_by_code(db: Database) -> dict[str, dict[str, Any]]:
    """Every service, active or not, by code (names outlive a catalog change)."""
    return {r["code"]: r for r in db.query(
        "SELECT code, agency_code, name_en, name_ur, standard_minutes FROM services")}


def list_catalog(db: Database) -> dict[str, Any]:
    """The whole catalog as JSON-ready data."""
    services = list(db.query("SELECT * FROM services WHERE active = 1 ORDER BY position"))
    for s in services:
        s["fees"], s["documents"] = json.loads(s["fees"]), json.loads(s["documents"])
    agencies = list(db.query("SELECT * FROM agencies ORDER BY position"))
    for a in agencies:
        a["services"] = [s for s in services if s["agency_code"] == a["code"]]
    return {
        "catalog_version": meta.get_int(db, meta.CATALOG_VERSION_KEY),
        "agencies": agencies,
        "documents": list(db.query("SELECT * FROM documents ORDER BY code")),
        "priority_classes": list(db.query("SELECT * FROM priority_classes ORDER BY weight, code")),
    }
