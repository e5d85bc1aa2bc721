"""HQ to node: queue downstream items per node and seal them for delivery.

Items (catalog versions, staff accounts with password hashes only, application
decisions, revocations, fleet index keys sealed to the node, citizens sealed to
the node that looked them up — hq/lookups.py) are queued per
node with a per-node seq; broadcast items are fanned out to every enrolled
node at enqueue time, so one acked mechanism carries both. Envelopes are
signed by HQ and, when the node's HPKE key is known, encrypted to it.

The node's downstream ack says which seq it has applied, and HQ takes it as
the truth about the node (`realign`): a node restored from a backup acks a
seq below what HQ had recorded (a step back), and HQ sends again from there;
a node ahead of HQ (HQ's store restored) moves HQ's counter above it, so new
items get seqs the node will apply. Either case is logged. Sending is paced
by the worker (`DownPacer`): the same range goes out again only after a
growing pause, so no exchange of acks and resends can loop.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hq.migrations import DECISION_INSERT, decision_row
from hq.store import HQDatabase, utc_now
from sync import envelope

log = logging.getLogger(__name__)
KINDS = ("catalog", "staff", "decision", "revocation", "certificate", "fleet_key", "citizen")
MAX_ITEMS_PER_ENVELOPE = 200
RESEND_FIRST_S = 20.0  # the same range again after 20 s, 40 s, 80 s … at most every
RESEND_MAX_S = 600.0  # 10 minutes, however often the node writes in between


def enqueue(db: HQDatabase, kind: str, payload: Any, node_id: str | None = None) -> int:
    """Queue an item for one node, or for every node when `node_id` is None; returns count."""
    if kind not in KINDS:
        raise ValueError(f"unknown downstream kind {kind!r}")
    result: int = db.retrying(lambda tx: enqueue_in(tx, kind, payload, node_id))
    return result


def enqueue_in(tx: HQDatabase, kind: str, payload: Any, node_id: str | None) -> int:
    """`enqueue` in the caller's transaction; a decision is also kept by reference."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    if node_id is None:
        nodes = [r[0] for r in tx.execute(
            "SELECT node_id FROM hq_nodes WHERE revoked = 0 ORDER BY node_id").fetchall()]
    else:
        nodes = [node_id]
    for target in nodes:
        seq = queue_item(tx, target, kind, text)
        if kind == "decision":
            tx.execute(DECISION_INSERT, decision_row(target, seq, payload, utc_now()))
    return len(nodes)


def queue_item(tx: HQDatabase, node_id: str, kind: str, text: str) -> int:
    """Queue one item (payload JSON `text`) for one node in the caller's transaction;
    returns its downstream seq."""
    row = tx.execute("SELECT down_seq FROM hq_nodes WHERE node_id = ?"
                     + tx.lock_clause(), [node_id]).fetchone()
    if row is None:
        raise ValueError(f"unknown node {node_id}")
    seq = int(row[0]) + 1
    tx.execute("UPDATE hq_nodes SET down_seq = ? WHERE node_id = ?", [seq, node_id])
    tx.execute("INSERT INTO hq_down (node_id, seq, kind, payload, created_at) "
               "VALUES (?, ?, ?, ?, ?)", [node_id, seq, kind, text, utc_now()])
    return seq


def realign(tx: HQDatabase, node_id: str, node_down_seq: int, why: str) -> int:
    """Take the node's applied downstream seq as the truth; returns HQ's new `down_acked`.

    Runs in the caller's transaction. A step back (node restored) makes HQ
    send again from the node's seq; a node ahead of HQ (HQ's store restored)
    moves HQ's counter above it. Both are logged.
    """
    row = tx.execute("SELECT down_seq, down_acked FROM hq_nodes WHERE node_id = ?"
                     + tx.lock_clause(), [node_id]).fetchone()
    down_seq, down_acked = int(row[0]), int(row[1])
    if node_down_seq < down_acked:
        log.warning("node %s stepped back downstream (%s): it has applied %d, HQ had %d "
                    "acknowledged; sending again from %d", node_id, why, node_down_seq,
                    down_acked, node_down_seq + 1)
    if node_down_seq > down_seq:
        log.warning("node %s is ahead of HQ downstream (%s): it has applied %d, HQ issued "
                    "only %d; new items continue after %d", node_id, why, node_down_seq,
                    down_seq, node_down_seq)
        down_seq = node_down_seq
    tx.execute("UPDATE hq_nodes SET down_seq = ?, down_acked = ? WHERE node_id = ?",
               [down_seq, node_down_seq, node_id])
    return node_down_seq


def pending_envelope(db: HQDatabase, node_id: str, sign_key: ec.EllipticCurvePrivateKey,
                     pacer: DownPacer | None = None) -> bytes | None:
    """The node's unacknowledged downstream items as one envelope, or None.

    With a `pacer`, None also when this range was sent too recently.
    """
    found = pending_items(db, node_id)
    if found is None:
        return None
    items, hpke_public = found
    if pacer is not None and not pacer.allow(node_id, items[0]["seq"], items[-1]["seq"]):
        return None
    header = {"kind": "down", "node": node_id, "first_seq": items[0]["seq"],
              "last_seq": items[-1]["seq"]}
    return envelope.seal(header, items, sign_key, _node_public(hpke_public))


def pending_items(db: HQDatabase, node_id: str) -> tuple[list[dict[str, Any]], str | None] | None:
    """(items after the node's downstream ack, the node's HPKE key), or None when none."""
    row = db.execute("SELECT down_acked, hpke_public FROM hq_nodes WHERE node_id = ?",
                     [node_id]).fetchone()
    if row is None:
        return None
    items = [{"seq": r[0], "kind": r[1], "payload": json.loads(r[2])} for r in db.execute(
        "SELECT seq, kind, payload FROM hq_down WHERE node_id = ? AND seq > ? ORDER BY seq "
        "LIMIT ?", [node_id, row[0], MAX_ITEMS_PER_ENVELOPE]).fetchall()]
    return (items, row[1]) if items else None


@dataclass
class _Sent:
    """The last downstream range sent to one node, when, and the pause before a repeat."""

    first: int
    last: int
    at: float
    pause: float


@dataclass
class DownPacer:
    """Decides whether a downstream range may go out now (one per worker, in memory).

    A new range (the node acked more, or HQ queued more) goes out at once;
    the same range again only after RESEND_FIRST_S, doubling up to
    RESEND_MAX_S. `reset` (the node came online) allows one prompt resend.
    """

    clock: Any = time.monotonic
    _sent: dict[str, _Sent] = field(default_factory=dict)

    def allow(self, node_id: str, first: int, last: int) -> bool:
        """True when the range may be sent now (and remembers it as sent)."""
        now = self.clock()
        sent = self._sent.get(node_id)
        if sent is None or (sent.first, sent.last) != (first, last):
            self._sent[node_id] = _Sent(first, last, now, RESEND_FIRST_S)
            return True
        if now - sent.at < sent.pause:
            return False
        sent.at, sent.pause = now, min(RESEND_MAX_S, sent.pause * 2)
        return True

    def reset(self, node_id: str) -> None:
        """The node (re)connected: its next request for the same range is answered."""
        sent = self._sent.get(node_id)
        if sent is not None:
            sent.at = float("-inf")


def _node_public(text: str | None) -> x25519.X25519PublicKey:
    """The node's HPKE key from its enrollment (PEM or base64 raw); downstream is never clear."""
    if not text:
        raise ValueError("node has no HPKE key on record; enroll it again")
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
    else:
        key = x25519.X25519PublicKey.from_public_bytes(base64.b64decode(text))
    if not isinstance(key, x25519.X25519PublicKey):
        raise ValueError("node HPKE key is not X25519")
    return key


def ack_envelope(node_id: str, acked_seq: int, sign_key: ec.EllipticCurvePrivateKey) -> bytes:
    """HQ's signed cumulative ack for a node, with HQ's clock (for the node's skew check)."""
    return envelope.seal({"kind": "ack", "node": node_id, "acked_seq": acked_seq},
                         {"acked_seq": acked_seq, "hq_hlc": hq_clock()}, sign_key, None)


def hq_clock() -> str:
    """HQ's wall time as an HLC string (node id `hq`)."""
    return f"{time.time_ns() // 1_000_000:015d}-00000-hq"
