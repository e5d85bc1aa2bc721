"""HQ's service catalog: a draft edited on the console, published as a new version.

The draft (migration 0010_catalog_draft) is `hq_catalog_services`, one row per service
(agency, English and Urdu names, standard minutes, fee, required documents, active), and
`hq_catalog_base`, the newest catalog HQ sent (hq_down, kind 'catalog') it was imported
from: agencies, documents, priority classes and the fields the console does not edit.
Publishing builds the next `catalog_version` in the node's catalog shape
(edge_node/domain/catalog.py; HQ does not import the node, so only the references the
node checks are checked here) and queues it to every unrevoked node of all or chosen
centers. Inactive services are left out: the node then marks them inactive.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from hq.downstream import enqueue_in
from hq.store import HQDatabase, utc_now

MAX_MINUTES = 480
MAX_NAME = 200
MAX_FEE = 10_000_000
CODE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
COLUMNS = ("code", "agency_code", "name_en", "name_ur", "standard_minutes", "fee_pkr",
           "documents", "active", "position")
FEE_LABELS = {"label_en": "Fee", "label_ur": "فیس"}


class CatalogError(ValueError):
    """A refused catalog request: `code` names the cause (the view translates it)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def newest_sent(db: HQDatabase) -> dict[str, Any] | None:
    """The catalog with the highest version HQ has queued to any node, or None."""
    best: dict[str, Any] | None = None
    for (text,) in db.execute("SELECT payload FROM hq_down WHERE kind = 'catalog'"):
        payload = json.loads(text)
        if best is None or int(payload["catalog_version"]) > int(best["catalog_version"]):
            best = payload
    return best


def base(db: HQDatabase) -> dict[str, Any] | None:
    """The catalog the draft was imported from, or None before an import."""
    row = db.execute("SELECT payload FROM hq_catalog_base WHERE id = 1").fetchone()
    return None if row is None else dict(json.loads(row[0]))


def services(db: HQDatabase) -> list[dict[str, Any]]:
    """The draft's services in catalog order (documents as a list of codes)."""
    rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM hq_catalog_services "
                      "ORDER BY position, code").fetchall()
    found = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    for service in found:
        service["documents"] = json.loads(service["documents"])
    return found


def import_current(db: HQDatabase) -> int:
    """Replace the draft with the newest catalog HQ sent; returns its version."""
    sent = newest_sent(db)
    if sent is None:
        raise CatalogError("nothing_sent")

    def step(tx: HQDatabase) -> int:
        tx.execute("DELETE FROM hq_catalog_services")
        tx.execute("DELETE FROM hq_catalog_base")
        tx.execute("INSERT INTO hq_catalog_base (id, catalog_version, payload, imported_at) "
                   "VALUES (1, ?, ?, ?)", [sent["catalog_version"],
                                           json.dumps(sent, ensure_ascii=False), utc_now()])
        position = 0
        for agency in sent["agencies"]:
            for service in agency["services"]:
                fees = service.get("fees") or []
                row = [service["code"], agency["code"], service["name_en"], service["name_ur"],
                       int(service["standard_minutes"]),
                       int(fees[0]["amount_pkr"]) if fees else 0,
                       json.dumps(service["documents"]), 1, position, utc_now()]
                tx.execute(f"INSERT INTO hq_catalog_services ({', '.join(COLUMNS)}, "
                           "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                position += 1
        return int(sent["catalog_version"])

    version: int = db.retrying(step)
    return version


def save_service(db: HQDatabase, form: dict[str, str]) -> dict[str, Any]:
    """Add or change one draft service from the edit form; returns the stored row."""
    current = base(db)
    if current is None:
        raise CatalogError("no_draft")
    row = parse_service(current, form)

    def step(tx: HQDatabase) -> None:
        found = tx.execute("SELECT position FROM hq_catalog_services WHERE code = ?",
                           [row["code"]]).fetchone()
        if found is None:
            top = tx.execute("SELECT MAX(position) FROM hq_catalog_services").fetchone()
            row["position"] = int(top[0] if top and top[0] is not None else -1) + 1
            tx.execute(f"INSERT INTO hq_catalog_services ({', '.join(COLUMNS)}, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [*(_stored(row, c) for c in COLUMNS), utc_now()])
            return
        row["position"] = int(found[0])
        names = [c for c in COLUMNS if c not in ("code", "position")]
        tx.execute(f"UPDATE hq_catalog_services SET {', '.join(f'{n} = ?' for n in names)}, "
                   "updated_at = ? WHERE code = ?",
                   [*(_stored(row, n) for n in names), utc_now(), row["code"]])

    db.retrying(step)
    return row


def _stored(row: dict[str, Any], column: str) -> Any:
    """A service value as its column holds it (documents as JSON)."""
    return json.dumps(row[column]) if column == "documents" else row[column]


def parse_service(current: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The edit form as a service row, or CatalogError naming the first bad field."""
    code = form.get("code", "").strip()
    if not CODE.match(code):
        raise CatalogError("bad_code")
    agencies = {a["code"] for a in current["agencies"]}
    if form.get("agency_code", "").strip() not in agencies:
        raise CatalogError("bad_agency")
    names = {k: form.get(k, "").strip() for k in ("name_en", "name_ur")}
    if any(not v or len(v) > MAX_NAME or not v.isprintable() for v in names.values()):
        raise CatalogError("bad_name")
    minutes, fee = _integer(form.get("standard_minutes", "")), _integer(form.get("fee_pkr", ""))
    if minutes is None or not 1 <= minutes <= MAX_MINUTES:
        raise CatalogError("bad_minutes")
    if fee is None or not 0 <= fee <= MAX_FEE:
        raise CatalogError("bad_fee")
    documents = [line.strip() for line in form.get("documents", "").splitlines() if line.strip()]
    known = {d["code"] for d in current["documents"]}
    if set(documents) - known or len(set(documents)) != len(documents):
        raise CatalogError("bad_documents")
    return {"code": code, "agency_code": form["agency_code"].strip(), **names,
            "standard_minutes": minutes, "fee_pkr": fee, "documents": documents,
            "active": 1 if form.get("active") else 0, "position": 0}


def _integer(text: str) -> int | None:
    """A whole number from a form field, or None."""
    text = text.strip()
    return int(text) if re.fullmatch(r"\d{1,9}", text) else None


def build(db: HQDatabase, version: int) -> dict[str, Any]:
    """The draft as a catalog in the node's shape, numbered `version`."""
    current = base(db)
    if current is None:
        raise CatalogError("no_draft")
    catalog = copy.deepcopy(current)
    catalog["catalog_version"] = version
    if "published" in catalog:
        catalog["published"] = utc_now()[:10]
    old = {s["code"]: s for a in current["agencies"] for s in a["services"]}
    draft = [s for s in services(db) if s["active"]]
    for agency in catalog["agencies"]:
        agency["services"] = [_node_service(s, old.get(s["code"])) for s in draft
                              if s["agency_code"] == agency["code"]]
    return catalog


def _node_service(row: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """One draft service in the node's shape, keeping the fields HQ does not edit."""
    service = {k: v for k, v in (old or {"turnaround_days": None}).items()}
    fees = copy.deepcopy(service.get("fees") or [])
    if fees:
        fees[0]["amount_pkr"] = row["fee_pkr"]
    elif row["fee_pkr"] > 0:
        fees = [{**FEE_LABELS, "amount_pkr": row["fee_pkr"]}]
    service.update({k: row[k] for k in ("code", "name_en", "name_ur", "standard_minutes",
                                        "documents")}, fees=fees)
    return service


def publish(db: HQDatabase, chosen: list[str] | None) -> tuple[int, int]:
    """Queue the next catalog version to every unrevoked node of the chosen centers (all
    when None); returns (version, nodes)."""
    sent = newest_sent(db)
    current = base(db)
    version = max(int(sent["catalog_version"]) if sent else 0,
                  int(current["catalog_version"]) if current else 0) + 1
    catalog = build(db, version)
    if not any(a["services"] for a in catalog["agencies"]):
        raise CatalogError("empty")

    def step(tx: HQDatabase) -> int:
        nodes = [(str(r[0]), str(r[1])) for r in tx.execute(
            "SELECT node_id, center_id FROM hq_nodes WHERE revoked = 0 ORDER BY node_id")]
        targets = [n for n, c in nodes if chosen is None or c in chosen]
        if not targets:
            raise CatalogError("no_node")
        for node in targets:
            enqueue_in(tx, "catalog", catalog, node)
        return len(targets)

    count: int = db.retrying(step)
    return version, count


def versions(db: HQDatabase) -> list[dict[str, Any]]:
    """Per unrevoked node: the newest catalog version it applied and the state (pending,
    applied or refused with the reason) of the newest one HQ sent it."""
    refused = {(str(r[0]), int(r[1])): str(r[2]) for r in db.execute(
        "SELECT node_id, seq, reason FROM hq_down_refused WHERE kind = 'catalog'")}
    rows = []
    for node, center, acked in db.execute("SELECT node_id, center_id, down_acked FROM hq_nodes "
                                          "WHERE revoked = 0 ORDER BY center_id, node_id"):
        row: dict[str, Any] = {"node_id": node, "center_id": center, "applied": None,
                               "sent": None, "state": None, "reason": None}
        for seq, text in db.execute("SELECT seq, payload FROM hq_down WHERE node_id = ? "
                                    "AND kind = 'catalog' ORDER BY seq", [node]):
            version = int(json.loads(text)["catalog_version"])
            reason = refused.get((str(node), int(seq)))
            state = "refused" if reason else "applied" if int(seq) <= int(acked) else "pending"
            if state == "applied":
                row["applied"] = max(version, row["applied"] or 0)
            row.update(sent=version, state=state, reason=reason)
        rows.append(row)
    return rows


def centers(db: HQDatabase) -> list[str]:
    """Centers with at least one enrolled, unrevoked node."""
    return [str(r[0]) for r in db.execute(
        "SELECT DISTINCT center_id FROM hq_nodes WHERE revoked = 0 ORDER BY center_id")]
