"""Append-only, hash-chained audit log of staff actions (no PII in entries).

Each entry's hash covers its fields and the previous entry's hash, so editing
an entry breaks its own hash, and deleting one breaks the chain (a seq gap or
a prev_hash that does not match). The newest seq and hash are also kept in
node_meta, so removing the tail of the log is detected too.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge_node.ids import new_id
from edge_node.store import sql
from sync.chain import GENESIS_HASH, entry_hash


def _head(db: Database) -> tuple[int, str]:
    """(seq, hash) of the newest entry, or (0, genesis)."""
    row = db.conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def append(db: Database, actor: dict[str, Any] | None, action: str, entity: str | None,
           entity_id: str | None, now: str, detail: dict[str, Any] | None = None) -> None:
    """Add one entry (call inside the same write as the action it records)."""
    seq, prev = _head(db)
    entry = {
        "id": new_id(), "seq": seq + 1, "at": now,
        "actor_id": actor["id"] if actor else None,
        "actor_role": actor["role"] if actor else None,
        "action": action, "entity": entity, "entity_id": entity_id,
        "detail": json.dumps(detail or {}, sort_keys=True), "prev_hash": prev,
    }
    entry["hash"] = entry_hash(entry)
    sql.insert(db, "audit_log", entry)
    sql.set_meta(db, "audit_head", f"{seq + 1}:{entry['hash']}")


def verify(db: Database) -> list[str]:
    """Every problem found in the chain; an empty list means intact."""
    problems: list[str] = []
    expected_seq, prev = 1, GENESIS_HASH
    for entry in db.query("SELECT * FROM audit_log ORDER BY seq"):
        if entry["seq"] != expected_seq:
            problems.append(f"entry {expected_seq}: missing (next entry is {entry['seq']})")
        if entry["prev_hash"] != prev:
            problems.append(f"entry {entry['seq']}: previous-hash link broken")
        if entry_hash(entry) != entry["hash"]:
            problems.append(f"entry {entry['seq']}: content was modified")
        expected_seq, prev = entry["seq"] + 1, entry["hash"]
    head = db.execute("SELECT value FROM node_meta WHERE key = 'audit_head'").fetchone()
    if head and head[0] != f"{expected_seq - 1}:{prev}":
        problems.append(f"log ends at entry {expected_seq - 1} but head is {head[0].split(':')[0]}")
    return problems
