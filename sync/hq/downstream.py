"""HQ to node: queue downstream items per node and seal them for delivery.

Items (catalog versions, staff accounts with password hashes only, application
decisions, revocations) are queued per node with a per-node seq; broadcast
items are fanned out to every enrolled node at enqueue time, so one acked
mechanism carries both. Envelopes are signed by HQ and, when the node's HPKE
key is known, encrypted to it.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from sync import envelope
from sync.hq.db import HQDatabase
from sync.hq.ingest import utc_now

KINDS = ("catalog", "staff", "decision", "revocation", "certificate")
MAX_ITEMS_PER_ENVELOPE = 200


def enqueue(db: HQDatabase, kind: str, payload: Any, node_id: str | None = None) -> int:
    """Queue an item for one node, or for every node when `node_id` is None; returns count."""
    if kind not in KINDS:
        raise ValueError(f"unknown downstream kind {kind!r}")
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)

    def run(tx: HQDatabase) -> int:
        if node_id is None:
            nodes = [r[0] for r in tx.execute(
                "SELECT node_id FROM hq_nodes WHERE revoked = 0 ORDER BY node_id").fetchall()]
        else:
            nodes = [node_id]
        for target in nodes:
            row = tx.execute("SELECT down_seq FROM hq_nodes WHERE node_id = ?"
                             + tx.lock_clause(), [target]).fetchone()
            if row is None:
                raise ValueError(f"unknown node {target}")
            seq = int(row[0]) + 1
            tx.execute("UPDATE hq_nodes SET down_seq = ? WHERE node_id = ?", [seq, target])
            tx.execute("INSERT INTO hq_down (node_id, seq, kind, payload, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", [target, seq, kind, text, utc_now()])
        return len(nodes)

    result: int = db.retrying(run)
    return result


def pending_envelope(db: HQDatabase, node_id: str,
                     sign_key: ec.EllipticCurvePrivateKey) -> bytes | None:
    """The node's unacknowledged downstream items as one envelope, or None."""
    row = db.execute("SELECT down_acked, hpke_public FROM hq_nodes WHERE node_id = ?",
                     [node_id]).fetchone()
    if row is None:
        return None
    items = [{"seq": r[0], "kind": r[1], "payload": json.loads(r[2])} for r in db.execute(
        "SELECT seq, kind, payload FROM hq_down WHERE node_id = ? AND seq > ? ORDER BY seq "
        "LIMIT ?", [node_id, row[0], MAX_ITEMS_PER_ENVELOPE]).fetchall()]
    if not items:
        return None
    header = {"kind": "down", "node": node_id, "first_seq": items[0]["seq"],
              "last_seq": items[-1]["seq"]}
    return envelope.seal(header, items, sign_key, _node_public(row[1]))


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
