"""The node's side of sync: the outbox port the agent uses, and downstream handlers.

The agent (sync/agent.py) knows rows and envelopes; this module hands it a
database port and applies what HQ sends down — catalog versions, staff
accounts (hashes only), application decisions and revocations — each
idempotent and recorded with its downstream seq in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlite_utils import Database

from certs.files import write_atomic
from certs.layout import CA_CERT, NODE_CERT, NODE_KEY
from certs.pki import cert_pem, common_name, verify_issued_by
from edge_node.domain import audit, epoch
from edge_node.domain.applications import rank
from edge_node.domain.catalog import apply_catalog, check_catalog
from edge_node.errors import EdgeError
from edge_node.ids import parse_iso
from edge_node.node import Node
from edge_node.paths import is_enrolled, note_exported, sync_dir
from edge_node.store import meta
from sync.batches import MAX_REFUSED_IN_ACK, REFUSAL_DETAIL_MAX
from sync.bundle import BundleError, ExportReport, export_outbox
from sync.changes import iter_changes
from sync.hlc import HLCError, Timestamp
from sync.identity import load_cert, load_ec_key, load_node_identity

log = logging.getLogger(__name__)
HQ_CLOCK_EVERY_S = 60.0  # record HQ's clock at most this often
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
    "code", "queue_prefix", "name_en", "name_ur", "reference", "status", "node_id", "cert"}
"""Fields a handler reads by name: a missing one is named in the refusal, other keys not."""


class NodeOutbox:
    """Implements sync.outbox_port.OutboxPort over a Node."""

    def __init__(self, node: Node) -> None:
        """Wrap an opened node."""
        self.node = node

    def acked_seq(self) -> int:
        """Highest seq HQ acknowledged."""
        return meta.get_int(self.node.reader(), meta.ACKED_KEY)

    def pending(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Unsent records after `after_seq`; after a restore only the restored ones."""
        point = self.restore_point()
        return [{"seq": c.seq, "hlc": c.hlc, "tbl": c.table, "pk": c.pk, "op": c.op,
                 "data": c.data} for c in iter_changes(self.node.reader().conn, after_seq, limit)
                if point is None or c.seq <= point[0]]

    def mark_acked(self, seq: int) -> None:
        """Record the ack and drop delivered records, in one transaction.

        After a restore, records above the restore point may carry seqs HQ acked
        for lost records: an ack never reaches them until `resume` moved them.
        """
        def run(db: Database) -> None:
            point = restore_point(db)
            upto = seq if point is None else min(seq, point[0])
            if upto > meta.get_int(db, meta.ACKED_KEY):
                meta.put(db, meta.ACKED_KEY, upto)
                meta.put(db, meta.LAST_ACK_KEY, self.node.timestamp())
                db.execute("DELETE FROM sync_outbox WHERE seq <= ?", [upto])
        self.node.write(run)

    def restore_epoch(self) -> int:
        """The node's restore epoch (edge_node/domain/epoch.py; 0: never restored)."""
        return epoch.current(self.node.reader())[0]

    def restore_point(self) -> tuple[int, str] | None:
        """(restored_seq, restore_id) while HQ has not told a restored node where to go on."""
        return restore_point(self.node.reader())

    def resume(self, acked_seq: int, resume_seq: int,
               audit_head: tuple[int, str] | None = None) -> None:
        """HQ's answer after a restore: move records made since above `resume_seq`.

        One transaction: audit entries made since the restore follow HQ's
        audit head (`audit_head`, see audit.rechain_after_restore), records
        after the restore point get the seqs right after `resume_seq` (order
        kept, no gaps), the AUTOINCREMENT counter follows, HQ's ack is recorded, and
        the restore point is cleared.
        """
        def run(db: Database) -> None:
            point = restore_point(db)
            if point is None:
                return
            base = point[0]
            if resume_seq < base or acked_seq > resume_seq:
                raise ValueError(f"resume at {resume_seq} (ack {acked_seq}) is below the "
                                 f"restore point {base}")
            restored_audit = restore_audit_seq(db)
            if audit_head is not None and restored_audit is not None \
                    and audit_head[0] > restored_audit:
                db.execute("DELETE FROM sync_outbox WHERE seq > ? AND tbl = 'audit_log'",
                           [base])  # re-emitted by the update triggers, as moved
                moved = audit.rechain_after_restore(db, restored_audit, *audit_head,
                                                    self.node.timestamp())
                log.warning("audit chain after restore continues after HQ's entry %d "
                            "(%d entries moved)", audit_head[0], moved)
            db.execute("UPDATE sync_outbox SET seq = -seq WHERE seq > ?", [base])
            db.execute(  # resume_seq + 1, + 2, … in the original order: no gap HQ would wait on
                "WITH r AS (SELECT seq, row_number() OVER (ORDER BY seq DESC) AS k "
                "FROM sync_outbox WHERE seq < 0) UPDATE sync_outbox SET seq = ? + "
                "(SELECT k FROM r WHERE r.seq = sync_outbox.seq) WHERE seq < 0", [resume_seq])
            held = db.execute("SELECT count(*) FROM sync_outbox WHERE seq > ?",
                              [resume_seq]).fetchone()[0]
            _set_issued_seq(db, resume_seq + int(held))
            meta.delete(db, meta.RESTORE_KEY)
            if acked_seq > meta.get_int(db, meta.ACKED_KEY):
                meta.put(db, meta.ACKED_KEY, acked_seq)
                meta.put(db, meta.LAST_ACK_KEY, self.node.timestamp())
                db.execute("DELETE FROM sync_outbox WHERE seq <= ?", [acked_seq])
        self.node.write(run)
        log.info("outbox resumed after restore: new seqs start after %d", resume_seq)

    def stats(self) -> dict[str, Any]:
        """Backlog count, oldest unsent age, bytes pending, newest seq."""
        count, oldest, size, last = self.node.reader().execute(
            "SELECT count(*), min(created_at), coalesce(sum(length(data)), 0), max(seq) "
            "FROM sync_outbox WHERE seq > ?", [self.acked_seq()]).fetchone()
        age = None
        if oldest:
            age = round((self.node.now() - parse_iso(_iso_fix(oldest))).total_seconds(), 1)
        return {"count": count, "oldest_age_s": age, "bytes_pending": size, "last_seq": last}

    def down_seq(self) -> int:
        """Highest downstream seq applied."""
        return meta.get_int(self.node.reader(), meta.DOWN_KEY)

    def apply_down(self, seq: int, kind: str, payload: Any) -> None:
        """Apply one downstream item and record its seq (skipped if already processed).

        An item the node refuses changes nothing; its reason is kept (same
        transaction as the seq) for the down ack to report to HQ.
        """
        def run(db: Database) -> None:
            if seq <= meta.get_int(db, meta.DOWN_KEY):
                return
            refusal = _apply_item(db, kind, payload, self.node)
            if refusal is not None:
                log.warning("downstream %s seq %d refused: %s", kind[:40], seq, refusal[0])
                _record_refusal(db, seq, kind, refusal, self.node.timestamp())
            meta.put(db, meta.DOWN_KEY, seq)
        self.node.write(run)

    def refused_down(self) -> list[dict[str, Any]]:
        """The newest refused downstream items, oldest first, as the down ack names them."""
        return [{k: entry[k] for k in ("seq", "reason", "detail")}
                for entry in refusals(self.node.reader())]

    def hlc_now(self) -> str:
        """Current HLC."""
        return str(self.node.clock.now())

    def record_link(self, state: str) -> None:
        """Persist the link state so `edge-node sync status` can show it."""
        self.node.write(lambda db: meta.put(db, meta.LINK_KEY, f"{state} {self.node.timestamp()}"))

    def record_hq_clock(self, hq_hlc: str) -> None:
        """Store '<HQ HLC> <local receive time>' for `edge-node doctor` (at most once a minute)."""
        try:
            Timestamp.parse(hq_hlc)
        except HLCError:
            return
        now = self.node.timestamp()
        previous = meta.get(self.node.reader(), meta.HQ_CLOCK_KEY)
        if previous and (self.node.now() - parse_iso(previous.split(" ")[1])
                         ).total_seconds() < HQ_CLOCK_EVERY_S:
            return
        self.node.write(lambda db: meta.put(db, meta.HQ_CLOCK_KEY, f"{hq_hlc} {now}"))

    def summary(self) -> dict[str, Any]:
        """Backlog and link facts read from the database (works without the agent)."""
        db = self.node.reader()
        link = meta.get(db, meta.LINK_KEY)
        state, _, since = (link or "never-connected ").partition(" ")
        return {**self.stats(), "acked_seq": self.acked_seq(), "down_seq": self.down_seq(),
                "last_ack_at": meta.get(db, meta.LAST_ACK_KEY), "link": state,
                "link_since": since or None}


def export_bundle(node: Node, directory: Path,
                  progress: Callable[[int], None] | None = None) -> ExportReport:
    """Write the unacknowledged outbox to a bundle in `directory` and record the export.

    The one export for the CLI, the API and the UI (they only format the
    report): recording the highest exported seq is what lets `retire` and
    re-enrolment count those records as carried away. Raises
    sync.bundle.BundleError (not enrolled, bad target, limits),
    sync.identity.IdentityError (unusable keys) or OSError.
    """
    if not is_enrolled(node.settings):
        raise BundleError("not_enrolled", "node is not enrolled: run `edge-node enroll` first")
    identity = load_node_identity(sync_dir(node.settings), node.node_id)
    report = export_outbox(NodeOutbox(node), identity, directory, progress)
    note_exported(Path(node.settings["data_dir"]), report.last_seq)
    return report


def restore_point(db: Database) -> tuple[int, str] | None:
    """The restore point recorded by `edge-node restore`, or None."""
    raw = meta.get(db, meta.RESTORE_KEY)
    if raw is None:
        return None
    point = json.loads(raw)
    return int(point["seq"]), str(point["id"])


def set_restore_point(db: Database, seq: int, restore_id: str,
                      audit_seq: int | None = None) -> None:
    """Hold back records made after `seq` until HQ says where they may start.

    `audit_seq`: the audit head when restored, where HQ's answer re-links the chain.
    """
    point: dict[str, Any] = {"seq": seq, "id": restore_id}
    if audit_seq is not None:
        point["audit"] = audit_seq
    meta.put(db, meta.RESTORE_KEY, json.dumps(point))


def restore_audit_seq(db: Database) -> int | None:
    """The audit head of the pending restore point (None: none pending, or an older point)."""
    raw = meta.get(db, meta.RESTORE_KEY)
    value = json.loads(raw).get("audit") if raw is not None else None
    return int(value) if isinstance(value, int) else None


def _issued_seq(db: Database) -> int:
    """The outbox AUTOINCREMENT counter: the highest seq ever issued (0 before any)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sync_outbox'").fetchone()
    return int(row[0]) if row else 0


def _set_issued_seq(db: Database, seq: int) -> None:
    """Move the outbox AUTOINCREMENT counter (new records get seq + 1 onwards)."""
    if db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'sync_outbox'",
                  [seq]).rowcount == 0:
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('sync_outbox', ?)", [seq])


def _apply_item(db: Database, kind: str, payload: Any, node: Node) -> tuple[str, str] | None:
    """Run the kind's handler in a savepoint; (reason, detail) when the item is refused."""
    handler = HANDLERS.get(kind)
    if handler is None:
        return "unknown_kind", "this node does not know this kind of item"
    try:
        with db.atomic():
            handler(db, payload, node)
    except (Refused, EdgeError, KeyError, TypeError, ValueError) as exc:
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
    return "bad_value", f"{kind}: a value is not acceptable"


def refusals(db: Database) -> list[dict[str, Any]]:
    """Refused downstream items kept on the node (newest MAX_REFUSED_IN_ACK), oldest first."""
    raw = meta.get(db, meta.REFUSED_KEY)
    kept = json.loads(raw) if raw is not None else []
    return sorted(kept, key=lambda entry: entry["seq"])


def _record_refusal(db: Database, seq: int, kind: str, refusal: tuple[str, str],
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


def _iso_fix(text: str) -> str:
    """Outbox created_at has milliseconds; pad to the microsecond storage form."""
    return text[:-1] + "000Z" if len(text) == 24 else text


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

    Refused when no application here has the reference (unknown, or another node's).
    """
    reference, target = payload["reference"], rank(payload["status"])
    if not isinstance(reference, str):
        raise TypeError("reference must be text")
    rows = list(db.query("SELECT id, status FROM applications WHERE reference = ?",
                         [reference]))
    if not rows:
        raise Refused("unknown_reference", "decision: no application with this reference "
                      "at this node")
    if target <= rank(rows[0]["status"]):
        return
    now = node.timestamp()
    hlc = db.execute("SELECT sync_hlc()").fetchone()[0]
    db.table("applications").update(rows[0]["id"], {
        "status": payload["status"], "status_hlc": hlc, "updated_at": now})
    audit.append(db, None, "application.decision", "application", rows[0]["id"], now,
                 {"to": payload["status"]})


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
            "revocation": _revocation, "certificate": _certificate}
