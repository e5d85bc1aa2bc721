"""The agency back office: the inbox of applications waiting for a decision, and deciding.

An agency officer's inbox holds their agency's applications only (the agency code
compared without case: the node's catalog writes `nadra`, accounts often `NADRA`),
oldest first; an admin's holds every agency's, or one chosen. Each row carries the
documents checklist and the service's turnaround standard from the newest catalog HQ
published (`edge-hq publish catalog`, kept in `hq_down`); with none published the
service code and the documents seen are shown as they are. The outcome of the newest
decision on each reference comes from hq/decisions.py `rows` (pending / applied /
refused with the node's reason). Deciding goes through hq/decisions.py `publish`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hq import decisions, pii
from hq.dbapi import Tx
from hq.store import HQDatabase, utc_now

WAITING = ("submitted", "in_review")
DECIDABLE = ("ready", "rejected")
INBOX_LIMIT = 500
COLUMNS = ("reference", "node_id", "center_id", "citizen_id", "service_code", "agency_code",
           "documents_seen", "status", "created_at")


def newest_catalog(db: Tx) -> dict[str, Any] | None:
    """The catalog with the highest version HQ has published, or None."""
    best: dict[str, Any] | None = None
    for (text,) in db.execute("SELECT DISTINCT payload FROM hq_down WHERE kind = 'catalog'"):
        try:
            data = json.loads(text)
        except ValueError:
            continue
        version = data.get("catalog_version") if isinstance(data, dict) else None
        if isinstance(version, int) and (best is None or version > best["catalog_version"]):
            best = data
    return best


def services_of(catalog: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Service code → its catalog entry (name, turnaround_days, documents)."""
    out: dict[str, dict[str, Any]] = {}
    for agency in (catalog or {}).get("agencies", []):
        for service in agency.get("services", []) if isinstance(agency, dict) else []:
            if isinstance(service, dict) and isinstance(service.get("code"), str):
                out[service["code"]] = service
    return out


def documents_of(catalog: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Document code → its catalog entry (names in English and Urdu)."""
    return {d["code"]: d for d in (catalog or {}).get("documents", [])
            if isinstance(d, dict) and isinstance(d.get("code"), str)}


def _seen(text: str | None) -> list[str]:
    """The documents the center saw (a JSON list; anything else as none)."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _age_days(created_at: str | None, now: datetime) -> int | None:
    """Whole days since `created_at` (ISO 8601), or None when unreadable."""
    try:
        created = datetime.fromisoformat(str(created_at).replace("Z", "+00:00"))
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return max((now - created).days, 0)


def _where(agency: str | None, center: str | None,
           service: str | None) -> tuple[str, list[str]]:
    """The inbox's conditions (waiting, plus the filters given)."""
    sql, params = f"status IN ({', '.join('?' for _ in WAITING)})", list(WAITING)
    for column, value in (("lower(agency_code)", agency), ("center_id", center),
                          ("service_code", service)):
        if value:
            sql += f" AND {column} = ?"
            params.append(value.lower() if column.startswith("lower") else value)
    return sql, params


def inbox(db: HQDatabase, agency: str | None, center: str | None = None,
          service: str | None = None) -> list[dict[str, Any]]:
    """Waiting applications, oldest first, with checklist, standard and outcome (no PII)."""
    where, params = _where(agency, center, service)
    found = db.execute(f"SELECT {', '.join(COLUMNS)} FROM hq_applications WHERE {where} "
                       "ORDER BY created_at, reference LIMIT ?",
                       [*params, INBOX_LIMIT]).fetchall()
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in found]
    catalog = newest_catalog(db)
    services, docs = services_of(catalog), documents_of(catalog)
    outcomes = latest_outcomes(db, [r["reference"] for r in rows])
    now = datetime.now(UTC)
    for row in rows:
        entry = services.get(row["service_code"] or "")
        seen = _seen(row["documents_seen"])
        needed = list(entry.get("documents", [])) if entry else []
        row["documents"] = [{"code": c, "names": docs.get(c, {}), "seen": c in seen}
                            for c in [*needed, *(s for s in seen if s not in needed)]]
        row["service"] = entry
        row["age_days"] = _age_days(row["created_at"], now)
        standard = entry.get("turnaround_days") if entry else None
        row["standard_days"] = standard if isinstance(standard, int) else None
        row["overdue"] = row["standard_days"] is not None and row["age_days"] is not None \
            and row["age_days"] > row["standard_days"]
        row["outcome"] = outcomes.get(row["reference"])
    return rows


def latest_outcomes(db: HQDatabase, references: list[str]) -> dict[str, dict[str, Any]]:
    """The newest decision on each reference with its state (hq/decisions.py `rows`)."""
    out: dict[str, dict[str, Any]] = {}
    if not references:
        return out
    for row in decisions.rows(db, limit=len(references) * 20, references=references):
        out.setdefault(row["reference"], row)
    return out


def citizens(db: HQDatabase, actor: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Citizen id → name in clear, each read audited (hq_pii_reads, purpose `decision`), all
    in one transaction; a citizen not synced yet or not readable is shown as unknown."""
    try:
        return pii.read_names(db, actor, "decision",
                              [r["citizen_id"] for r in rows if r["citizen_id"]], utc_now())
    except pii.PIIKeyError:
        return {}


def in_scope(db: HQDatabase, agency: str | None, reference: str) -> bool:
    """The application exists and is this agency's (any agency's when `agency` is None)."""
    sql, params = "SELECT 1 FROM hq_applications WHERE reference = ?", [reference]
    if agency is not None:
        sql, params = sql + " AND lower(agency_code) = ?", [reference, agency.lower()]
    return db.execute(sql, params).fetchone() is not None


def filter_values(db: HQDatabase, agency: str | None) -> dict[str, list[str]]:
    """The agencies, centers and services present among waiting applications."""
    where, params = _where(agency, None, None)
    out: dict[str, list[str]] = {}
    for key, column in (("agencies", "lower(agency_code)"), ("centers", "center_id"),
                        ("services", "service_code")):
        found = db.execute(f"SELECT DISTINCT {column} FROM hq_applications WHERE {where} "
                           f"AND {column} IS NOT NULL ORDER BY 1", params).fetchall()
        out[key] = [str(r[0]) for r in found]
    return out
