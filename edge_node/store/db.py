"""Opening the node database: SQLCipher (or plain SQLite in development), WAL, FULL sync."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlcipher3
from sqlite_utils import Database

from edge_node.store.keyfile import NodeKeys

BUSY_TIMEOUT_MS = 10_000

DatabaseError = (sqlite3.DatabaseError, sqlcipher3.DatabaseError)
# A constraint a write would break (unique, foreign key, check), on either driver.
IntegrityError = (sqlite3.IntegrityError, sqlcipher3.IntegrityError)


class StoreError(RuntimeError):
    """The database cannot be opened or used (wrong key, corrupt file...)."""


def connect(path: Path, keys: NodeKeys | None) -> Any:
    """Open a connection with the node's pragmas; `keys=None` means unencrypted (dev only)."""
    if keys is None:
        conn: Any = sqlite3.connect(str(path), check_same_thread=False)
    else:
        conn = sqlcipher3.connect(str(path), check_same_thread=False)
        # A raw 256-bit key skips SQLCipher's PBKDF2, so connections open fast.
        conn.execute(f"PRAGMA key = \"x'{keys.db_key.hex()}'\"")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except DatabaseError as exc:
        conn.close()
        raise StoreError(
            f"{path}: cannot read the database (wrong key file, or not a node database)"
        ) from exc
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit is on disk (WAL fsynced) before the caller hears success.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def open_database(path: Path, keys: NodeKeys | None) -> Database:
    """A sqlite-utils Database over a configured connection."""
    return Database(connect(path, keys), execute_plugins=False)


def integrity_check(db: Database) -> str:
    """Result of `PRAGMA integrity_check` ('ok' when healthy)."""
    rows = db.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


def data_version(db: Database) -> int:
    """`PRAGMA data_version`: moves when another connection commits (live screens poll it)."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])
