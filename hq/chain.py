"""HQ's view of each node's audit chain: the entries indexed as they arrive, and the check.

Audit entries travel as ordinary records (hq/ingest.py merges them); each one
is also indexed in hq_audit with whether its hash matches its content, so
`verify_chain` can name gaps, forks, broken links and altered entries
(`edge-hq chain`, the fleet view).
"""

from __future__ import annotations

from typing import Any

from hq.store import HQDatabase
from sync import envelope
from sync.chain import GENESIS_HASH, entry_hash


def index_audit_entry(tx: HQDatabase, node_id: str, data: dict[str, Any]) -> None:
    """Index an audit entry for chain verification."""
    try:
        ok = entry_hash(data) == data.get("hash")
        seq, entry_id = int(data["seq"]), str(data["id"])
        if not envelope.valid_seq(seq):
            raise ValueError("audit seq out of range")
    except (KeyError, TypeError, ValueError):
        ok, seq, entry_id = False, -1, str(data.get("id"))
    tx.execute("INSERT INTO hq_audit (node_id, seq, entry_id, hash, prev_hash, hash_ok) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id, seq, entry_id) DO NOTHING",
               [node_id, seq, entry_id, str(data.get("hash")), str(data.get("prev_hash")),
                int(ok)])


def verify_chain(db: HQDatabase, node_id: str) -> list[str]:
    """Problems in a node's audit chain as received so far: gaps, forks, bad links or hashes."""
    problems: list[str] = []
    rows = db.execute("SELECT seq, entry_id, hash, prev_hash, hash_ok FROM hq_audit "
                      "WHERE node_id = ? ORDER BY seq, entry_id", [node_id]).fetchall()
    expected, prev = 1, GENESIS_HASH
    by_seq: dict[int, list[Any]] = {}
    for row in rows:
        by_seq.setdefault(row[0], []).append(row)
    for seq in sorted(by_seq):
        entries = by_seq[seq]
        if seq != expected:
            problems.append(f"gap: entries {expected}..{seq - 1} missing")
        if len(entries) > 1:
            problems.append(f"fork: {len(entries)} different entries with seq {seq}")
        entry = entries[0]
        if not entry[4]:
            problems.append(f"entry {seq}: hash does not match its content")
        if entry[3] != prev:
            problems.append(f"entry {seq}: previous-hash link broken")
        expected, prev = seq + 1, entry[2]
    return problems
