"""HQ storage over SQLite (default, embedded) or PostgreSQL (`postgresql://…`).

SQL is written once with `?` placeholders and portable types; for PostgreSQL
the placeholders become `%s`. Each unit of work is one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS hq_nodes (
        node_id TEXT PRIMARY KEY, center_id TEXT NOT NULL, cert_pem TEXT NOT NULL,
        hpke_public TEXT, revoked INTEGER NOT NULL DEFAULT 0, acked_seq BIGINT NOT NULL DEFAULT 0,
        last_seen TEXT, status TEXT, down_seq BIGINT NOT NULL DEFAULT 0,
        down_acked BIGINT NOT NULL DEFAULT 0, enrolled_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS hq_seen (
        node_id TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (node_id, seq))""",
    """CREATE TABLE IF NOT EXISTS hq_records (
        tbl TEXT NOT NULL, pk TEXT NOT NULL, origin TEXT NOT NULL, state TEXT NOT NULL,
        row_json TEXT, hlc TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (tbl, pk))""",
    """CREATE TABLE IF NOT EXISTS hq_conflicts (
        tbl TEXT NOT NULL, pk TEXT NOT NULL, col TEXT NOT NULL, clock TEXT NOT NULL,
        value_json TEXT, winner_clock TEXT NOT NULL, PRIMARY KEY (tbl, pk, col, clock))""",
    """CREATE TABLE IF NOT EXISTS hq_quarantine (
        id TEXT PRIMARY KEY, received_at TEXT NOT NULL, source TEXT NOT NULL,
        claimed_node TEXT, reason TEXT NOT NULL, detail TEXT NOT NULL, size BIGINT NOT NULL,
        sample TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS hq_audit (
        node_id TEXT NOT NULL, seq BIGINT NOT NULL, entry_id TEXT NOT NULL, hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL, hash_ok INTEGER NOT NULL, PRIMARY KEY (node_id, seq, entry_id))""",
    """CREATE TABLE IF NOT EXISTS hq_down (
        node_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
        created_at TEXT NOT NULL, PRIMARY KEY (node_id, seq))""",
    """CREATE TABLE IF NOT EXISTS hq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS hq_down_refused (
        node_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
        reason TEXT NOT NULL, detail TEXT NOT NULL, reported_at TEXT NOT NULL,
        PRIMARY KEY (node_id, seq))""",
]
RETRIES = 8


class HQDatabase:
    """One connection to the HQ store; use `transaction()` for every unit of work."""

    def __init__(self, url: str) -> None:
        """Open `postgresql://…`, `sqlite:///path` or a plain file path."""
        self.url = url
        self.dialect = "postgresql" if url.startswith(("postgresql://", "postgres://")) \
            else "sqlite"
        if self.dialect == "postgresql":
            import psycopg

            self.conn: Any = psycopg.connect(url, autocommit=True)
        else:
            path = url.removeprefix("sqlite:///")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                        timeout=30)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
        with self.transaction() as tx:
            for ddl in SCHEMA:
                tx.execute(ddl)

    def _sql(self, sql: str) -> str:
        """Placeholders in the connection's style."""
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (inside a transaction) and return the cursor."""
        return self.conn.execute(self._sql(sql), tuple(params))

    def lock_clause(self) -> str:
        """`FOR UPDATE` where row locks exist (SQLite locks the whole file instead)."""
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    @contextmanager
    def transaction(self) -> Iterator[HQDatabase]:
        """BEGIN … COMMIT, rolled back on error."""
        self.conn.execute("BEGIN" if self.dialect == "postgresql" else "BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def retrying(self, fn: Any) -> Any:
        """Run `fn(self)` in a transaction, retrying deadlocks and busy errors."""
        for attempt in range(RETRIES):
            try:
                with self.transaction():
                    return fn(self)
            except Exception as exc:
                if attempt == RETRIES - 1 or not _transient(exc):
                    raise
                time.sleep(0.01 * 2**attempt)
        raise RuntimeError("unreachable")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def _transient(exc: Exception) -> bool:
    """Deadlocks, serialization failures and a busy SQLite file are worth a retry."""
    code = getattr(exc, "sqlstate", None)
    if code in {"40001", "40P01"}:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
