"""The node's side of sync: the outbox port the agent uses.

The agent (sync/agent.py) knows rows and envelopes; this module hands it a
database port: the outbox and its acks, the restore point, the link facts, and
what HQ sends down — applied by the handlers in downstream.py, each recorded
with its downstream seq in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.domain import audit, epoch, kpi
from edge_node.domain.pii import clear_for_envelope
from edge_node.ids import parse_iso
from edge_node.node import Node
from edge_node.paths import is_enrolled, note_exported, sync_dir
from edge_node.replication.downstream import apply_item, record_refusal, refusals
from edge_node.replication.lookup import DESK
from edge_node.store import meta
from sync.bundle import BundleError, ExportReport, export_outbox
from sync.changes import iter_changes
from sync.hlc import HLCError, Timestamp
from sync.identity import load_node_identity

log = logging.getLogger(__name__)
HQ_CLOCK_EVERY_S = 60.0  # record HQ's clock at most this often


class NodeOutbox:
    """Implements sync.outbox_port.OutboxPort over a Node."""

    def __init__(self, node: Node) -> None:
        """Wrap an opened node."""
        self.node = node

    def acked_seq(self) -> int:
        """Highest seq HQ acknowledged."""
        return meta.get_int(self.node.reader(), meta.ACKED_KEY)

    def pending(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Unsent records after `after_seq`; after a restore only the restored ones.

        They are about to be sealed to HQ (agent, export bundle): PII fields are
        decrypted into the clear wire form here, in memory only (domain/pii.py).
        """
        point, keys = self.restore_point(), self.node.keys
        return [{"seq": c.seq, "hlc": c.hlc, "tbl": c.table, "pk": c.pk, "op": c.op,
                 "data": clear_for_envelope(keys, c.table, c.data)}
                for c in iter_changes(self.node.reader().conn, after_seq, limit)
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
        return backlog(self.node)

    def down_seq(self) -> int:
        """Highest downstream seq applied."""
        return meta.get_int(self.node.reader(), meta.DOWN_KEY)

    def apply_down(self, seq: int, kind: str, payload: Any) -> None:
        """Apply one downstream item and record its seq (skipped if already processed).

        An item the node refuses changes nothing; its reason is kept (same
        transaction as the seq) for the down ack to report to HQ. After the commit,
        a reception lookup this item answered is woken (lookup.py).
        """
        def run(db: Database) -> None:
            if seq <= meta.get_int(db, meta.DOWN_KEY):
                return
            refusal = apply_item(db, kind, payload, self.node)
            if refusal is not None:
                log.warning("downstream %s seq %d refused: %s", kind[:40], seq, refusal[0])
                record_refusal(db, seq, kind, refusal, self.node.timestamp())
            meta.put(db, meta.DOWN_KEY, seq)
        try:
            self.node.write(run)
        except BaseException:
            DESK.discard(self.node.node_id)
            raise
        DESK.release(self.node.node_id)

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

    def live_summary(self) -> dict[str, Any] | None:
        """Today's live center summary for the status message (kpi.live; no PII), or None
        when it can't be read: the status (backlog, link) must go out regardless."""
        try:
            return kpi.live(self.node.reader(), self.node.today(), self.node.now())
        except Exception as exc:  # a closed database at shutdown, a locked file...
            log.warning("live summary unavailable (%s); status sent without it",
                        type(exc).__name__)
            return None

    def summary(self) -> dict[str, Any]:
        """Backlog and link facts read from the database (works without the agent)."""
        return summary(self.node)


class NodeView(Protocol):
    """What reading the outbox needs: a read connection and the clock. `Node` has them,
    and so has the doctor's read-only view (no writer thread, no migrations)."""

    settings: Settings

    def reader(self) -> Database:
        """This thread's read-only connection."""

    def now(self) -> datetime:
        """The current time."""


def backlog(view: NodeView) -> dict[str, Any]:
    """Backlog count, oldest unsent age, bytes pending, newest seq."""
    db = view.reader()
    count, oldest, size, last = db.execute(
        "SELECT count(*), min(created_at), coalesce(sum(length(data)), 0), max(seq) "
        "FROM sync_outbox WHERE seq > ?", [meta.get_int(db, meta.ACKED_KEY)]).fetchone()
    age = None
    if oldest:
        age = round((view.now() - parse_iso(_iso_fix(oldest))).total_seconds(), 1)
    return {"count": count, "oldest_age_s": age, "bytes_pending": size, "last_seq": last}


def summary(view: NodeView) -> dict[str, Any]:
    """Backlog, acks and link as recorded in the database (works without the agent)."""
    db = view.reader()
    link = meta.get(db, meta.LINK_KEY)
    state, _, since = (link or "never-connected ").partition(" ")
    return {**backlog(view), "acked_seq": meta.get_int(db, meta.ACKED_KEY),
            "down_seq": meta.get_int(db, meta.DOWN_KEY),
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


def _iso_fix(text: str) -> str:
    """Outbox created_at has milliseconds; pad to the microsecond storage form."""
    return text[:-1] + "000Z" if len(text) == 24 else text
