"""Downstream items a node refused: checked out of its down ack, recorded once per item.

A node names each downstream seq it did not apply in its down ack
(`{"down_seq": 9, "refused": [{"seq": 4, "reason": "missing_field", "detail": "…"}]}`,
see sync/batches.py). Acks without the field are valid. Every ack repeats the node's
newest refusals, so HQ keeps the first report of each (node, seq) and ignores repeats.
`edge-hq refused` lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hq.store import HQDatabase
from sync.batches import MAX_REFUSED_IN_ACK, REFUSAL_DETAIL_MAX, REFUSAL_REASON

SUBJECT_MAX = 200


@dataclass(frozen=True)
class Refusal:
    """One refused item as the node reported it."""

    seq: int
    reason: str
    detail: str


def parse_refused(body: dict[str, Any], down_seq: int) -> list[Refusal]:
    """The refusals named in an ack body (none when the field is absent); ValueError if bad."""
    entries = body.get("refused", [])
    if not isinstance(entries, list) or len(entries) > MAX_REFUSED_IN_ACK:
        raise ValueError(f"refused must be a list of at most {MAX_REFUSED_IN_ACK} entries")
    return [_refusal(entry, down_seq) for entry in entries]


def _refusal(entry: Any, down_seq: int) -> Refusal:
    """One checked entry: a seq the ack covers, a reason code and a short printable text."""
    if not isinstance(entry, dict):
        raise ValueError("a refused entry is not an object")
    seq, reason, detail = entry.get("seq"), entry.get("reason"), entry.get("detail")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= down_seq:
        raise ValueError(f"a refused seq must be an integer in 1..{down_seq} (the ack)")
    if not isinstance(reason, str) or not REFUSAL_REASON.match(reason):
        raise ValueError("a refusal reason must be a short lowercase code")
    if not isinstance(detail, str) or not 0 < len(detail) <= REFUSAL_DETAIL_MAX \
            or not detail.isprintable():
        raise ValueError(f"a refusal detail must be 1..{REFUSAL_DETAIL_MAX} printable "
                         "characters")
    return Refusal(seq, reason, detail)


def record_refused(tx: HQDatabase, node_id: str, refused: list[Refusal], now: str) -> int:
    """Keep each refusal once per (node, seq) in the caller's transaction; returns new ones.

    A seq HQ holds no item for is kept as kind `unknown` rather than blocking the ack.
    """
    added = 0
    for item in refused:
        row = tx.execute("SELECT kind, payload FROM hq_down WHERE node_id = ? AND seq = ?",
                         [node_id, item.seq]).fetchone()
        kind, subject = (row[0], subject_of(row[0], row[1])) if row else \
            ("unknown", "(no such item queued at HQ)")
        cur = tx.execute(
            "INSERT INTO hq_down_refused (node_id, seq, kind, subject, reason, detail, "
            "reported_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id, seq) DO NOTHING",
            [node_id, item.seq, kind, subject, item.reason, item.detail, now])
        added += max(cur.rowcount, 0)
    return added


def subject_of(kind: str, payload_text: str) -> str:
    """What the item was about, for the operator, without PII (no names, no hashes)."""
    try:
        payload = json.loads(payload_text)
        if kind == "catalog":
            text = f"catalog_version {payload.get('catalog_version')}"
        elif kind == "decision":
            text = f"{payload.get('reference')} -> {payload.get('status')}"
        elif kind == "staff":
            text = "accounts " + ", ".join(str(a.get("id")) for a in payload["accounts"])
        elif kind == "revocation":
            text = f"node {payload.get('node_id')}"
        else:
            text = ""
    except (AttributeError, KeyError, TypeError, ValueError):
        text = "(unreadable payload)"
    return text[:SUBJECT_MAX]


def refused_rows(db: HQDatabase, node_id: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    """Refused downstream items, newest report first (optionally of one node)."""
    where, params = ("WHERE node_id = ? ", [node_id]) if node_id else ("", [])
    rows = db.execute(
        "SELECT node_id, seq, kind, subject, reason, detail, reported_at FROM hq_down_refused "
        f"{where}ORDER BY reported_at DESC, node_id, seq DESC LIMIT ?",
        [*params, limit]).fetchall()
    keys = ("node_id", "seq", "kind", "subject", "reason", "detail", "reported_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def refused_count(db: HQDatabase, node_id: str) -> int:
    """How many of the node's downstream items it refused."""
    row = db.execute("SELECT count(*) FROM hq_down_refused WHERE node_id = ?",
                     [node_id]).fetchone()
    return int(row[0])
