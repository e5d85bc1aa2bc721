"""The fleet blind-index key at HQ: versions, delivery to every node, rotation, retirement.

HQ generates each version (32 random bytes) and keeps it wrapped under its
PII field key in `hq_fleet_keys` (hq/pii.py). A node receives a version
sealed to its enrollment HPKE key (sync/pii.py: `seal_fleet_key`): in its
enrollment bundle, and as the downstream kind `fleet_key`; each delivery is
kept in `hq_fleet_delivery` with its downstream seq (0: in the bundle).

`rotate` makes the next version, queues it to every enrolled node and
re-indexes HQ's `hq_citizens` under it. The older versions are retired —
their key deleted — once every node that is not revoked has acknowledged the
current version without refusing it (`retire_acked`, run on every downstream
ack and by `edge-hq fleet-key retire`).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from hq import pii, projections
from hq.downstream import queue_item
from hq.store import HQDatabase, utc_now
from sync.pii import FLEET_KEY_BYTES, seal_fleet_key


def _new_version(tx: HQDatabase) -> tuple[int, bytes]:
    """Store the next fleet key version (wrapped) and return it."""
    row = tx.execute("SELECT max(version) FROM hq_fleet_keys").fetchone()
    version, key = int(row[0] or 0) + 1, secrets.token_bytes(FLEET_KEY_BYTES)
    tx.execute("INSERT INTO hq_fleet_keys (version, key_enc, created_at) VALUES (?, ?, ?)",
               [version, pii.encrypt(pii.field_key(tx), "hq_fleet_keys", "key", key.hex()),
                utc_now()])
    return version, key


def _deliver(tx: HQDatabase, version: int, key: bytes) -> int:
    """Queue `version` to every enrolled node that has not had it; returns how many."""
    rows = tx.execute(
        "SELECT node_id, hpke_public FROM hq_nodes n WHERE revoked = 0 AND NOT EXISTS "
        "(SELECT 1 FROM hq_fleet_delivery d WHERE d.node_id = n.node_id AND d.version = ?) "
        "ORDER BY node_id", [version]).fetchall()
    for node_id, hpke_public in rows:
        if not hpke_public:
            continue  # enrolled without an HPKE key: it gets the key when it re-enrolls
        payload = seal_fleet_key(hpke_public, node_id, version, key)
        seq = queue_item(tx, node_id, "fleet_key", json.dumps(payload, sort_keys=True))
        tx.execute("INSERT INTO hq_fleet_delivery (node_id, version, down_seq) VALUES (?, ?, ?)",
                   [node_id, version, seq])
    return len(rows)


def reindex(tx: HQDatabase) -> int:
    """Recompute every `hq_citizens.cnic_index` under the current version; returns rows."""
    counts = projections.rebuild(tx, ["citizens"])
    return counts["citizens"]


def rotate(db: HQDatabase) -> dict[str, Any]:
    """A new fleet key version: stored, queued to every node, HQ's index rebuilt under it."""
    def run(tx: HQDatabase) -> dict[str, Any]:
        version, key = _new_version(tx)
        return {"version": version, "queued": _deliver(tx, version, key),
                "reindexed": reindex(tx)}
    result: dict[str, Any] = db.retrying(run)
    return result


def distribute(db: HQDatabase) -> dict[str, Any]:
    """Make the first version if there is none, and queue the current one to every node
    that has not had it (nodes enrolled before HQ had fleet keys)."""
    def run(tx: HQDatabase) -> dict[str, Any]:
        current, made = pii.current_fleet(tx), False
        if current is None:
            current, made = _new_version(tx), True
        queued = _deliver(tx, *current)
        return {"version": current[0], "queued": queued,
                "reindexed": reindex(tx) if made else 0}
    result: dict[str, Any] = db.retrying(run)
    return result


def for_enrollment(tx: HQDatabase, node_id: str, hpke_public: str) -> dict[str, Any]:
    """The current fleet key sealed to an enrolling node (made first when there is none),
    recorded as delivered in the bundle; caller's transaction."""
    current = pii.current_fleet(tx)
    made = current is None
    if current is None:
        current = _new_version(tx)
    tx.execute("DELETE FROM hq_fleet_delivery WHERE node_id = ? AND version = ?",
               [node_id, current[0]])
    tx.execute("INSERT INTO hq_fleet_delivery (node_id, version, down_seq) VALUES (?, ?, 0)",
               [node_id, current[0]])
    if made:  # the first version: nodes enrolled before get it downstream
        _deliver(tx, *current)
        reindex(tx)
    return seal_fleet_key(hpke_public, node_id, *current)


def pending_nodes(tx: HQDatabase, version: int) -> list[str]:
    """Nodes (not revoked) that have not acknowledged `version` (or refused it)."""
    rows = tx.execute(
        "SELECT n.node_id FROM hq_nodes n LEFT JOIN hq_fleet_delivery d ON d.node_id = "
        "n.node_id AND d.version = ? WHERE n.revoked = 0 AND (d.node_id IS NULL OR "
        "d.down_seq > n.down_acked OR EXISTS (SELECT 1 FROM hq_down_refused r WHERE "
        "r.node_id = n.node_id AND r.seq = d.down_seq AND d.down_seq > 0)) ORDER BY n.node_id",
        [version]).fetchall()
    return [str(r[0]) for r in rows]


def retire_acked(tx: HQDatabase) -> list[int]:
    """Retire (delete the key of) every version below the current one once all nodes have
    acknowledged the current one; caller's transaction. Returns the versions retired."""
    row = tx.execute("SELECT max(version) FROM hq_fleet_keys WHERE key_enc IS NOT NULL"
                     ).fetchone()
    if row[0] is None:
        return []
    current = int(row[0])
    old = [int(r[0]) for r in tx.execute(
        "SELECT version FROM hq_fleet_keys WHERE version < ? AND key_enc IS NOT NULL",
        [current]).fetchall()]
    if not old or pending_nodes(tx, current):
        return []
    tx.execute("UPDATE hq_fleet_keys SET key_enc = NULL, retired_at = ? WHERE version < ? "
               "AND key_enc IS NOT NULL", [utc_now(), current])
    return old


def status(db: HQDatabase) -> list[dict[str, Any]]:
    """Each version: created, retired, and the nodes still to acknowledge it."""
    rows = db.execute("SELECT version, created_at, retired_at, key_enc IS NOT NULL "
                      "FROM hq_fleet_keys ORDER BY version").fetchall()
    return [{"version": int(v), "created_at": c, "retired_at": r,
             "pending": pending_nodes(db, int(v)) if live else []}
            for v, c, r, live in rows]
