"""The node_meta table: every key the node keeps there, and the one way to read and write it.

node_meta is a small key/value table (schema.py) for the node's own facts:
identity, sync positions, counters and markers. No other module spells a key
or runs SQL on the table (tests/test_one_fact.py checks it); a new fact gets a
constant here, with who writes it and what it means.

Functions take anything with `execute(sql, params)`: a sqlite-utils Database
(inside the writer or a reader) or a raw sqlite3/sqlcipher connection (a
backup copy being checked). Writes run inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any, Protocol

# -- identity (edge_node/bootstrap.py writes them once, at `edge-node init`) --------------
NODE_ID_KEY = "node_id"  # this node's id (the CN of its sync certificate)
CENTER_ID_KEY = "center_id"  # the service center the node serves
CREATED_AT_KEY = "created_at"  # ISO time the database was initialised

# -- domain -------------------------------------------------------------------------------
CATALOG_VERSION_KEY = "catalog_version"  # domain/catalog.py: version of the applied catalog
AUDIT_HEAD_KEY = "audit_head"  # domain/audit.py: '<seq>:<hash>' of the newest audit entry
ORDER_COUNTER_KEY = "order_key"  # domain/visits.py: last queue order key handed out
EPOCH_KEY = "restore_epoch"  # domain/epoch.py: JSON {epoch, day} of the last restore

# -- sync (edge_node/replication/port.py) ---------------------------------------------------
ACKED_KEY = "sync_acked_seq"  # highest outbox seq HQ acknowledged
LAST_ACK_KEY = "sync_last_ack_at"  # ISO time of the last ack that moved ACKED_KEY
DOWN_KEY = "sync_down_seq"  # highest downstream seq applied (or refused)
LINK_KEY = "sync_link"  # '<link state> <ISO time>' the agent last recorded
HQ_CLOCK_KEY = "sync_hq_hlc"  # "<HQ's HLC> <local time received>", for the doctor's skew check
RESTORE_KEY = "sync_restore_point"  # JSON {seq, id, audit?}: set by restore, cleared by HQ
REFUSED_KEY = "sync_down_refused"  # JSON list of the newest refused downstream items
REVOKED_KEY = "revoked_nodes"  # JSON sorted list of node ids HQ revoked

KEYS = frozenset({
    NODE_ID_KEY, CENTER_ID_KEY, CREATED_AT_KEY, CATALOG_VERSION_KEY, AUDIT_HEAD_KEY,
    ORDER_COUNTER_KEY, EPOCH_KEY, ACKED_KEY, LAST_ACK_KEY, DOWN_KEY, LINK_KEY, HQ_CLOCK_KEY,
    RESTORE_KEY, REFUSED_KEY, REVOKED_KEY})
"""Every key the node writes."""


class Executes(Protocol):
    """A sqlite-utils Database or a DB-API connection: both run `execute(sql, params)`."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any:
        """Run one statement; returns a cursor."""


def get(db: Executes, key: str) -> str | None:
    """The value of `key`, or None when it was never set."""
    row = db.execute("SELECT value FROM node_meta WHERE key = ?", [key]).fetchone()
    return str(row[0]) if row else None


def get_int(db: Executes, key: str) -> int:
    """An integer value (0 when absent)."""
    value = get(db, key)
    return int(value) if value is not None else 0


def put(db: Executes, key: str, value: str | int) -> None:
    """Set `key` (inserted or replaced)."""
    db.execute("INSERT INTO node_meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, str(value)])


def put_all(db: Executes, values: dict[str, str]) -> None:
    """Set several keys."""
    for key, value in values.items():
        put(db, key, value)


def delete(db: Executes, key: str) -> None:
    """Remove `key` (nothing when absent)."""
    db.execute("DELETE FROM node_meta WHERE key = ?", [key])


def next_counter(db: Executes, key: str) -> int:
    """Increment an integer counter (1 when absent) and return the new value."""
    row = db.execute(
        "INSERT INTO node_meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
        "SET value = CAST(value AS INTEGER) + 1 RETURNING value", [key]).fetchone()
    return int(row[0])


def read_all(db: Executes) -> dict[str, str]:
    """The whole table as a dict (a backup's or a database's facts at once)."""
    return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM node_meta",
                                                   []).fetchall()}
