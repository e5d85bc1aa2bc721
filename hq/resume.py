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

The answer also carries the audit head HQ holds for the node (seq, hash):
the node's entries made since the restore continue after it, starting with
its restore entry, so HQ's chain shows a restore instead of a fork. And the
request names the node's restore epoch (edge_node/domain/epoch.py): HQ
remembers which restore used which epoch and logs, and tells the node, when
two restores used the same one (the same backup restored twice).

The request also names the downstream seq the restored node has applied (the
backup's, usually below what HQ recorded as acknowledged): HQ realigns its
downstream stream to it (`downstream.realign`) and sends again from there.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from hq import downstream
from hq.store import HQDatabase
from sync import envelope
from sync.chain import GENESIS_HASH
from sync.merge import hash_chained_tables

log = logging.getLogger(__name__)

RESUME_MARGIN_SEQS = 10_000
RESTORE_ID = re.compile(r"^[0-9a-f]{32}$")


class ResumeError(ValueError):
    """A resume request HQ cannot answer (its answer would leave the seq space)."""


@dataclass(frozen=True)
class ResumeRequest:
    """What a restored node sends: the seq it was restored at and its restore id."""

    restored_seq: int
    restore_id: str
    down_seq: int | None = None
    epoch: int | None = None


def parse_request(body: Any) -> ResumeRequest:
    """Check a resume request body; ValueError when malformed."""
    seq = body.get("restored_seq") if isinstance(body, dict) else None
    rid = body.get("restore_id") if isinstance(body, dict) else None
    if not envelope.valid_seq(seq, lowest=0) or seq > envelope.MAX_SEQ - RESUME_MARGIN_SEQS:
        raise ValueError(f"resume needs a restored_seq within "
                         f"0..{envelope.MAX_SEQ - RESUME_MARGIN_SEQS}")
    if not isinstance(rid, str) or not RESTORE_ID.match(rid):
        raise ValueError("resume needs a 32-hex restore_id")
    down = body.get("down_seq")
    if down is not None and not envelope.valid_seq(down, lowest=0):
        raise ValueError(f"resume down_seq must be within 0..{envelope.MAX_SEQ}")
    epoch = body.get("epoch")
    if epoch is not None and not envelope.valid_seq(epoch, lowest=0):
        raise ValueError(f"resume epoch must be within 0..{envelope.MAX_SEQ}")
    return ResumeRequest(seq, rid, down, epoch)


def reserve(tx: HQDatabase, node_id: str, request: ResumeRequest
            ) -> tuple[int, int, dict[str, Any]]:
    """(acked_seq, resume_seq, more answer) for this restore, abandoning seqs the node
    cannot send; `more` holds the audit head and whether the epoch was used before.

    Runs in the caller's transaction; the caller advances the ack afterwards.
    The downstream stream is realigned to the node's applied seq on every request.
    """
    if request.down_seq is not None:
        downstream.realign(tx, node_id, request.down_seq, "resume after restore")
    row = tx.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?" + tx.lock_clause(),
                     [node_id]).fetchone()
    acked = int(row[0])
    key = f"resume:{node_id}:{request.restore_id}"
    known = tx.execute("SELECT value FROM hq_meta WHERE key = ?", [key]).fetchone()
    if known:
        answer = json.loads(known[0]) if known[0].startswith("{") else {"resume_seq": known[0]}
        return acked, int(answer.pop("resume_seq")), answer
    seen = tx.execute("SELECT max(seq) FROM hq_seen WHERE node_id = ?", [node_id]).fetchone()
    resume_seq = max(acked, int(seen[0] or 0), request.restored_seq) + RESUME_MARGIN_SEQS
    if resume_seq > envelope.MAX_SEQ:
        raise ResumeError("no seqs left above what HQ has seen from this node")
    _mark_seen(tx, node_id, max(acked, request.restored_seq) + 1, resume_seq)
    more: dict[str, Any] = {"audit_head": list(audit_head(tx, node_id)),
                            "epoch": request.epoch,
                            "epoch_reused": _epoch_reused(tx, node_id, request)}
    tx.execute("INSERT INTO hq_meta (key, value) VALUES (?, ?)",
               [key, json.dumps({"resume_seq": resume_seq, **more})])
    log.info("node %s restored at seq %d (restore epoch %s): new records after %d, audit "
             "continues after entry %d", node_id, request.restored_seq, request.epoch,
             resume_seq, more["audit_head"][0])
    return acked, resume_seq, more


def audit_head(tx: HQDatabase, node_id: str) -> tuple[int, str]:
    """(seq, hash) of the newest audit entry HQ holds for the node, or (0, genesis)."""
    row = tx.execute("SELECT seq, hash FROM hq_audit WHERE node_id = ? ORDER BY seq DESC, "
                     "entry_id LIMIT 1", [node_id]).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


def _epoch_reused(tx: HQDatabase, node_id: str, request: ResumeRequest) -> bool:
    """Record which restore used the request's epoch; True (and logged) when another did."""
    if request.epoch is None:
        return False
    key = f"restore-epoch:{node_id}:{request.epoch}"
    row = tx.execute("SELECT value FROM hq_meta WHERE key = ?", [key]).fetchone()
    if row is None:
        tx.execute("INSERT INTO hq_meta (key, value) VALUES (?, ?)", [key, request.restore_id])
        return False
    if row[0] == request.restore_id:
        return False
    log.warning("node %s: restore epoch %d was used by an earlier restore too (the same "
                "backup restored twice?); tickets and references issued offline since may "
                "repeat", node_id, request.epoch)
    return True


def _mark_seen(tx: HQDatabase, node_id: str, first: int, last: int) -> None:
    """Count seqs first..last as seen (those already seen stay as they are)."""
    tx.execute(
        "WITH RECURSIVE r(s) AS (SELECT CAST(? AS BIGINT) UNION ALL SELECT s + 1 FROM r "
        "WHERE s < ?) INSERT INTO hq_seen (node_id, seq) SELECT ?, s FROM r WHERE true "
        "ON CONFLICT (node_id, seq) DO NOTHING", [first, last, node_id])


def resume_ack_envelope(node_id: str, acked_seq: int, resume_seq: int, restore_id: str,
                        sign_key: ec.EllipticCurvePrivateKey,
                        more: dict[str, Any] | None = None) -> bytes:
    """HQ's cumulative ack carrying the answer to a resume request (signed, not secret).

    `more`: the audit head and epoch facts from `reserve`.
    """
    return envelope.seal({"kind": "ack", "node": node_id, "acked_seq": acked_seq},
                         {**(more or {}), "acked_seq": acked_seq, "resume_seq": resume_seq,
                          "restore_id": restore_id}, sign_key, None)


def restores_in_chain(db: HQDatabase, node_id: str) -> list[str]:
    """The node's restore entries in its audit chain at HQ, one line each (for `edge-hq chain`)."""
    lines = []
    chained = hash_chained_tables()
    for (text,) in db.execute("SELECT row_json FROM hq_records WHERE tbl IN ("
                              + ", ".join("?" * len(chained)) + ") AND origin = ? AND "
                              "row_json LIKE ?",
                              [*chained, node_id, '%"node.restore"%']).fetchall():
        entry = json.loads(text)
        if entry.get("action") != "node.restore":
            continue
        detail = json.loads(entry.get("detail") or "{}")
        after = detail.get("restored_audit_seq")
        lines.append(f"restore at entry {entry['seq']} ({entry['at']}): the node was restored "
                     + (f"to its entry {after}; entries {after + 1}..{entry['seq'] - 1} are "
                        "kept at HQ only" if isinstance(after, int)
                        and after + 1 < entry["seq"] else "with nothing lost"))
    return sorted(lines, key=lambda line: int(line.split()[3]))
