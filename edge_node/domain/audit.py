"""Append-only, hash-chained audit log of staff actions (no PII in entries).

Each entry's hash covers its fields and the previous entry's hash, so editing
an entry breaks its own hash, and deleting one breaks the chain (a seq gap or
a prev_hash that does not match). The newest seq and hash are also kept in
node_meta, so removing the tail of the log is detected too.

After a restore from backup, HQ may hold entries the restored log lost (made
after the backup). Entries made since the restore have not left the node
(their outbox records are held back until HQ answers the resume), so when HQ
answers with the head it holds, `rechain_after_restore` moves them after
HQ's head and links them to it, starting with the `node.restore` entry: one
chain at HQ, with a restore where it would otherwise fork. `verify` accepts
that one jump, at a `node.restore` entry that names it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge_node.ids import new_id
from edge_node.store import meta, sql
from sync.chain import GENESIS_HASH, entry_hash


def head(db: Database) -> tuple[int, str]:
    """(seq, hash) of the newest entry, or (0, genesis)."""
    row = db.conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


def append(db: Database, actor: dict[str, Any] | None, action: str, entity: str | None,
           entity_id: str | None, now: str, detail: dict[str, Any] | None = None) -> None:
    """Add one entry (call inside the same write as the action it records)."""
    seq, prev = head(db)
    entry = {
        "id": new_id(), "seq": seq + 1, "at": now,
        "actor_id": actor["id"] if actor else None,
        "actor_role": actor["role"] if actor else None,
        "action": action, "entity": entity, "entity_id": entity_id,
        "detail": json.dumps(detail or {}, sort_keys=True), "prev_hash": prev,
    }
    entry["hash"] = entry_hash(entry)
    sql.insert(db, "audit_log", entry)
    meta.put(db, meta.AUDIT_HEAD_KEY, f"{seq + 1}:{entry['hash']}")


RESTORE_ACTION = "node.restore"


def rechain_after_restore(db: Database, restored_seq: int, hq_seq: int, hq_hash: str,
                          now: str) -> int:
    """Move entries after `restored_seq` to follow HQ's head (hq_seq, hq_hash); returns how many.

    Nothing to do when HQ holds no entry past the restored log. The first
    moved entry is the restore entry (one is added when missing); its detail
    names the jump. Entries are updated in place (capture triggers re-emit
    them); the caller drops their older held outbox records first.
    """
    if hq_seq <= restored_seq:
        return 0
    moved = list(db.query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq",
                          [restored_seq]))
    fresh = not moved or moved[0]["action"] != RESTORE_ACTION
    if fresh:
        moved.insert(0, {"id": new_id(), "at": now, "actor_id": None, "actor_role": None,
                         "action": RESTORE_ACTION, "entity": None, "entity_id": None,
                         "detail": "{}"})
    detail = json.loads(moved[0]["detail"])
    detail.update({"restored_audit_seq": restored_seq, "continues_after": hq_seq})
    moved[0]["detail"] = json.dumps(detail, sort_keys=True)
    prev = hq_hash
    for offset, entry in enumerate(moved, start=1):
        entry.update(seq=hq_seq + offset, prev_hash=prev)
        entry["hash"] = prev = entry_hash(entry)
    for entry in reversed(moved[1:] if fresh else moved):  # highest first: new seqs are
        db.table("audit_log").update(entry["id"], {k: entry[k] for k in (  # above old ones
            "seq", "detail", "prev_hash", "hash")})
    if fresh:
        sql.insert(db, "audit_log", moved[0])
    meta.put(db, meta.AUDIT_HEAD_KEY, f"{moved[-1]['seq']}:{moved[-1]['hash']}")
    return len(moved)


def _restore_jump(entry: dict[str, Any], expected_seq: int) -> bool:
    """True for a restore entry that continues after HQ's head, from `expected_seq - 1`."""
    if entry["action"] != RESTORE_ACTION:
        return False
    try:
        detail = json.loads(entry["detail"])
    except ValueError:
        return False
    return bool(detail.get("restored_audit_seq") == expected_seq - 1 and
                detail.get("continues_after") == entry["seq"] - 1)


def verify(db: Database) -> list[str]:
    """Every problem found in the chain; an empty list means intact."""
    problems: list[str] = []
    expected_seq, prev = 1, GENESIS_HASH
    for entry in db.query("SELECT * FROM audit_log ORDER BY seq"):
        if entry["seq"] != expected_seq and _restore_jump(entry, expected_seq):
            prev = entry["prev_hash"]  # HQ's head: the entries between are at HQ
        elif entry["seq"] != expected_seq:
            problems.append(f"entry {expected_seq}: missing (next entry is {entry['seq']})")
        if entry["prev_hash"] != prev:
            problems.append(f"entry {entry['seq']}: previous-hash link broken")
        if entry_hash(entry) != entry["hash"]:
            problems.append(f"entry {entry['seq']}: content was modified")
        expected_seq, prev = entry["seq"] + 1, entry["hash"]
    head = meta.get(db, meta.AUDIT_HEAD_KEY)
    if head is not None and head != f"{expected_seq - 1}:{prev}":
        problems.append(f"log ends at entry {expected_seq - 1} but head is {head.split(':')[0]}")
    return problems
