"""A restored node asks HQ where its new records may start; HQ answers once per restore.

A node restored from a backup has an outbox counter behind what HQ already
holds: records made after the backup reached HQ and were lost with the disk.
New records must never reuse those seqs (HQ would drop them as duplicates).
The node therefore holds back everything it made since the restore and sends a
`resume` request naming the seq it was restored at (`restored_seq`, every
record up to it is an original HQ may already have) and a random restore id.

HQ picks `resume_seq` above everything it has seen from the node, plus a
margin for envelopes of the lost disk that may still be on their way through
the broker, and counts the seqs between `restored_seq` and `resume_seq` it
never received as seen: the node no longer has them, so HQ's cumulative ack
must not wait for them. The answer is remembered per restore id, so a repeated
request gets the same answer and abandons nothing new.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sync import envelope
from sync.hq.db import HQDatabase

RESUME_MARGIN_SEQS = 10_000
RESTORE_ID = re.compile(r"^[0-9a-f]{32}$")


class ResumeError(ValueError):
    """A resume request HQ cannot answer (its answer would leave the seq space)."""


@dataclass(frozen=True)
class ResumeRequest:
    """What a restored node sends: the seq it was restored at and its restore id."""

    restored_seq: int
    restore_id: str


def parse_request(body: Any) -> ResumeRequest:
    """Check a resume request body; ValueError when malformed."""
    seq = body.get("restored_seq") if isinstance(body, dict) else None
    rid = body.get("restore_id") if isinstance(body, dict) else None
    if not envelope.valid_seq(seq, lowest=0) or seq > envelope.MAX_SEQ - RESUME_MARGIN_SEQS:
        raise ValueError(f"resume needs a restored_seq within "
                         f"0..{envelope.MAX_SEQ - RESUME_MARGIN_SEQS}")
    if not isinstance(rid, str) or not RESTORE_ID.match(rid):
        raise ValueError("resume needs a 32-hex restore_id")
    return ResumeRequest(seq, rid)


def reserve(tx: HQDatabase, node_id: str, request: ResumeRequest) -> tuple[int, int]:
    """(acked_seq, resume_seq) for this restore, abandoning seqs the node cannot send.

    Runs in the caller's transaction; the caller advances the ack afterwards.
    """
    row = tx.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?" + tx.lock_clause(),
                     [node_id]).fetchone()
    acked = int(row[0])
    key = f"resume:{node_id}:{request.restore_id}"
    known = tx.execute("SELECT value FROM hq_meta WHERE key = ?", [key]).fetchone()
    if known:
        return acked, int(known[0])
    seen = tx.execute("SELECT max(seq) FROM hq_seen WHERE node_id = ?", [node_id]).fetchone()
    resume_seq = max(acked, int(seen[0] or 0), request.restored_seq) + RESUME_MARGIN_SEQS
    if resume_seq > envelope.MAX_SEQ:
        raise ResumeError("no seqs left above what HQ has seen from this node")
    _mark_seen(tx, node_id, max(acked, request.restored_seq) + 1, resume_seq)
    tx.execute("INSERT INTO hq_meta (key, value) VALUES (?, ?)", [key, str(resume_seq)])
    return acked, resume_seq


def _mark_seen(tx: HQDatabase, node_id: str, first: int, last: int) -> None:
    """Count seqs first..last as seen (those already seen stay as they are)."""
    tx.execute(
        "WITH RECURSIVE r(s) AS (SELECT CAST(? AS BIGINT) UNION ALL SELECT s + 1 FROM r "
        "WHERE s < ?) INSERT INTO hq_seen (node_id, seq) SELECT ?, s FROM r WHERE true "
        "ON CONFLICT (node_id, seq) DO NOTHING", [first, last, node_id])


def resume_ack_envelope(node_id: str, acked_seq: int, resume_seq: int, restore_id: str,
                        sign_key: ec.EllipticCurvePrivateKey) -> bytes:
    """HQ's cumulative ack carrying the answer to a resume request (signed, not secret)."""
    return envelope.seal({"kind": "ack", "node": node_id, "acked_seq": acked_seq},
                         {"acked_seq": acked_seq, "resume_seq": resume_seq,
                          "restore_id": restore_id}, sign_key, None)
