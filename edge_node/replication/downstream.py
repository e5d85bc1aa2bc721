"""Downstream items from HQ: one handler per kind, and the refusals the node keeps.

HQ sends catalog versions, staff accounts (hashes only), application
decisions, revocations, renewed certificates, fleet index keys
(fleet_key.py) and citizens a lookup asked for (lookup.py). Each handler is
idempotent and runs in a savepoint: an item the node will not apply changes
nothing and is kept as a refusal (reason code, text without PII) for the down
ack. NodeOutbox.apply_down (port.py) calls `apply_item` and `record_refusal` in
the transaction that records the downstream seq.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography import x509
from sqlite_utils import Database

from certs.files import write_atomic
from certs.layout import CA_CERT, NODE_CERT, NODE_KEY
from certs.pki import cert_pem, common_name, verify_issued_by
from edge_node.domain import applications, audit
from edge_node.domain.catalog import apply_catalog, check_catalog
from edge_node.errors import ConflictError, EdgeError
from edge_node.node import Node
from edge_node.paths import sync_dir
from edge_node.replication.fleet_key import apply_fleet_key
from edge_node.replication.lookup import apply_citizen
from edge_node.store import meta
from edge_node.store.db import IntegrityError
from sync.batches import MAX_REFUSED_IN_ACK, REFUSAL_DETAIL_MAX
from sync.identity import load_cert, load_ec_key
from sync.merge import decision_problem

STAFF_FIELDS = ("id", "username", "full_name", "role", "password_hash", "active",
                "language", "version")


class Refused(Exception):
    """A downstream item the node will not apply: a reason code and a text without PII."""

    def __init__(self, reason: str, detail: str) -> None:
        """Keep the machine code (e.g. `unknown_reference`) and the explanation."""
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


FIELD_NAMES = frozenset(STAFF_FIELDS) | {
    "accounts", "agencies", "services", "documents", "priority_classes", "catalog_version",
    "code", "queue_prefix", "name_en", "name_ur", "reference", "status", "node_id", "cert",
    "request", "found", "sealed", "cnic", "name", "id"}
"""Fields a handler reads by name: a missing one is named in the refusal, other keys not."""


def apply_item(db: Database, kind: str, payload: Any, node: Node) -> tuple[str, str] | None:
    """Run the kind's handler in a savepoint; (reason, detail) when the item is refused."""
    handler = HANDLERS.get(kind)
    if handler is None:
        return "unknown_kind", "this node does not know this kind of item"
    try:
        with db.atomic():
            handler(db, payload, node)
    except (Refused, EdgeError, KeyError, TypeError, ValueError, *IntegrityError) as exc:
        return refusal_of(kind, exc)
    return None


def refusal_of(kind: str, exc: Exception) -> tuple[str, str]:
    """A handler's exception as (reason code, short text); never echoes item values."""
    if isinstance(exc, Refused):
        return exc.reason, exc.detail[:REFUSAL_DETAIL_MAX]
    if isinstance(exc, EdgeError):  # domain messages are written to be shown (no PII)
        return "invalid", f"{kind}: {exc.message}"[:REFUSAL_DETAIL_MAX]
    if isinstance(exc, KeyError):
        name = exc.args[0] if exc.args else None
        field = f" {name}" if name in FIELD_NAMES else ""
        return "missing_field", f"{kind}: a required field{field} is missing"
    if isinstance(exc, TypeError):
        return "bad_type", f"{kind}: a field has the wrong type"
    if isinstance(exc, IntegrityError):  # e.g. a username this node already has locally
        return "conflict", f"{kind}: it conflicts with a record this node holds"
    return "bad_value", f"{kind}: a value is not acceptable"


def refusals(db: Database) -> list[dict[str, Any]]:
    """Refused downstream items kept on the node (newest MAX_REFUSED_IN_ACK), oldest first."""
    raw = meta.get(db, meta.REFUSED_KEY)
    kept = json.loads(raw) if raw is not None else []
    return sorted(kept, key=lambda entry: entry["seq"])


def record_refusal(db: Database, seq: int, kind: str, refusal: tuple[str, str],
                    at: str) -> None:
    """Keep one refusal (once per seq), dropping the oldest beyond MAX_REFUSED_IN_ACK."""
    kept = {entry["seq"]: entry for entry in refusals(db)}
    kept[seq] = {"seq": seq, "kind": kind[:40], "reason": refusal[0],
                 "detail": _printable(refusal[1]), "at": at}
    newest = sorted(kept.values(), key=lambda entry: entry["seq"])[-MAX_REFUSED_IN_ACK:]
    meta.put(db, meta.REFUSED_KEY, json.dumps(newest, ensure_ascii=False))


def _printable(text: str) -> str:
    """The text as HQ accepts it: 1..REFUSAL_DETAIL_MAX printable characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text)[:REFUSAL_DETAIL_MAX]
    return clean or "refused"


def _catalog(db: Database, payload: Any, node: Node) -> None:
    """A newer catalog version replaces the current one; older ones are ignored."""
    if payload["catalog_version"] <= meta.get_int(db, meta.CATALOG_VERSION_KEY):
        return
    check_catalog(payload)
    apply_catalog(db, payload)
    audit.append(db, None, "catalog.update", "catalog", str(payload["catalog_version"]),
                 node.timestamp())


def _staff(db: Database, payload: Any, node: Node) -> None:
    """Staff accounts from HQ (hashes only): a higher version wins."""
    for account in payload["accounts"]:
        row = {k: account[k] for k in STAFF_FIELDS}
        current = db.execute("SELECT version FROM staff WHERE id = ?", [row["id"]]).fetchone()
        if current and current[0] >= row["version"]:
            continue
        db.table("staff").upsert({**row, "updated_at": node.timestamp()}, pk="id")
        if not row["active"]:
            db.execute("DELETE FROM sessions WHERE staff_id = ?", [row["id"]])
        node.sessions.clear()
        audit.append(db, None, "staff.sync", "staff", row["id"], node.timestamp(),
                     {"version": row["version"]})


def _decision(db: Database, payload: Any, node: Node) -> None:
    """A back-office decision moves an application up the lattice (never back).

    Refused, with a reason code HQ shows (`edge-hq decisions --refused`), when
    the decision itself is not one the back office may make (sync/merge.py
    decision_problem), when no application here has the reference (unknown, or
    another node's), or when the lattice forbids the move (`lattice_forbidden`).
    The same decision twice is applied once. An old decision without `reason` parses.
    """
    reference, status, reason = payload["reference"], payload["status"], payload.get("reason")
    if not isinstance(reference, str):
        raise TypeError("reference must be text")
    problem = decision_problem(status, reason)
    if problem is not None:
        raise Refused(problem[0], f"decision: {problem[1]}")
    rows = list(db.query("SELECT id FROM applications WHERE reference = ?", [reference]))
    if not rows:
        raise Refused("unknown_reference", "decision: no application with this reference "
                      "at this node")
    try:
        applications.apply_decision(db, applications.get_application(db, rows[0]["id"]),
                                    status, reason, node.timestamp())
    except ConflictError as exc:
        raise Refused("lattice_forbidden", f"decision: {exc.message}") from exc


def _revocation(db: Database, payload: Any, node: Node) -> None:
    """Remember revoked nodes (refuse their bundles); a revoked self stops syncing."""
    revoked = set(json.loads(meta.get(db, meta.REVOKED_KEY) or "[]"))
    revoked.add(str(payload["node_id"]))
    meta.put(db, meta.REVOKED_KEY, json.dumps(sorted(revoked)))
    audit.append(db, None, "node.revoked", "node", str(payload["node_id"]), node.timestamp())


def _certificate(db: Database, payload: Any, node: Node) -> None:
    """A renewed certificate: same key, same CA, this node; replaces node.pem atomically."""
    directory = sync_dir(node.settings)
    cert = x509.load_pem_x509_certificate(str(payload["cert"]).encode())
    verify_issued_by(cert, load_cert(directory / CA_CERT))
    own = load_ec_key(directory / NODE_KEY).public_key().public_numbers()
    key = cert.public_key()
    if common_name(cert) != node.node_id or getattr(key, "public_numbers", None) is None \
            or key.public_numbers() != own:  # type: ignore[union-attr]
        raise ValueError("renewed certificate is not for this node's key")
    write_atomic(directory / NODE_CERT, cert_pem(cert))
    audit.append(db, None, "node.certificate_renewed", "node", node.node_id, node.timestamp(),
                 {"not_after": cert.not_valid_after_utc.isoformat()})


HANDLERS = {"catalog": _catalog, "staff": _staff, "decision": _decision,
            "revocation": _revocation, "certificate": _certificate,
            "fleet_key": apply_fleet_key,
            "citizen": apply_citizen}
