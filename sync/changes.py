"""Change capture: every change to a synced table lands in the outbox.

Capture is done by SQLite triggers, so it happens in the same transaction as
the change and no code path can forget it. The outbox `seq` is an
AUTOINCREMENT key: monotonic, never reused, and gap-free because a rolled-back
change rolls its outbox row (and the sequence) back with it. The HLC comes
from the SQL function `sync_hlc()`, which `register_clock` binds to a Clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sync.hlc import Clock

OUTBOX_TABLE = "sync_outbox"
HLC_FUNCTION = "sync_hlc"
Op = Literal["insert", "update", "delete"]
OPS: tuple[Op, ...] = ("insert", "update", "delete")

OUTBOX_DDL = f"""
CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hlc TEXT NOT NULL,
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    data TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


class Connection(Protocol):
    """The part of a DB-API connection (sqlite3 or sqlcipher3) used here."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any:
        """Run one statement."""

    def create_function(
        self, name: str, narg: int, func: Any, *, deterministic: bool = ...
    ) -> None:
        """Register a SQL function."""


@dataclass(frozen=True)
class Change:
    """One outbox record."""

    seq: int
    hlc: str
    table: str
    pk: str
    op: Op
    data: dict[str, Any] | None


def register_clock(conn: Connection, clock: Clock) -> None:
    """Make `sync_hlc()` return the next timestamp of `clock` on this connection."""
    conn.create_function(HLC_FUNCTION, 0, lambda: str(clock.now()))


def _quote(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _columns(conn: Connection, table: str) -> list[str]:
    """Column names of `table`, in order."""
    rows = conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
    if not rows:
        raise ValueError(f"no such table: {table}")
    return [row[1] for row in rows]


def _json_of(alias: str, columns: list[str]) -> str:
    """SQL expression building a JSON object from the NEW/OLD row."""
    pairs = ", ".join(f"'{c}', {alias}.{_quote(c)}" for c in columns)
    return f"json_object({pairs})"


def install_capture(conn: Connection, table: str, pk: str = "id") -> None:
    """(Re)create the three capture triggers of `table`; run after each migration."""
    columns = _columns(conn, table)
    if pk not in columns:
        raise ValueError(f"table {table} has no column {pk}")
    for op in OPS:
        conn.execute(f"DROP TRIGGER IF EXISTS {_quote(f'capture_{table}_{op}')}")
    new_json, qt, qpk = _json_of("NEW", columns), _quote(table), _quote(pk)
    body = (
        f"INSERT INTO {OUTBOX_TABLE} (hlc, tbl, pk, op, data) "
        f"VALUES ({HLC_FUNCTION}(), '{table}', CAST(%s.{qpk} AS TEXT), '%s', %s);"
    )
    conn.execute(
        f"CREATE TRIGGER {_quote(f'capture_{table}_insert')} AFTER INSERT ON {qt} BEGIN "
        + body % ("NEW", "insert", new_json) + " END"
    )
    conn.execute(
        f"CREATE TRIGGER {_quote(f'capture_{table}_update')} AFTER UPDATE ON {qt} BEGIN "
        + body % ("NEW", "update", new_json) + " END"
    )
    conn.execute(
        f"CREATE TRIGGER {_quote(f'capture_{table}_delete')} AFTER DELETE ON {qt} BEGIN "
        + body % ("OLD", "delete", "NULL") + " END"
    )


def latest_hlc(conn: Connection) -> str | None:
    """The newest HLC in the outbox, to seed the clock after a restart."""
    row = conn.execute(f"SELECT max(hlc) FROM {OUTBOX_TABLE}").fetchone()
    return row[0] if row and row[0] else None


def iter_changes(conn: Connection, after_seq: int = 0, limit: int = 500) -> Iterator[Change]:
    """Outbox records with seq > after_seq, oldest first, at most `limit`."""
    rows = conn.execute(
        f"SELECT seq, hlc, tbl, pk, op, data FROM {OUTBOX_TABLE} "
        "WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    )
    for seq, hlc, tbl, pk, op, data in rows:
        yield Change(seq, hlc, tbl, pk, op, json.loads(data) if data else None)


def issued_seq(conn: Connection) -> int:
    """The outbox's AUTOINCREMENT counter: the highest seq ever issued (0 before any)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", [OUTBOX_TABLE]).fetchone()
    return int(row[0]) if row else 0


def discard_since(conn: Connection, seq: int) -> int:
    """Un-capture: drop the records captured after `seq` and give their seqs back.

    Only for changes the node makes to itself and must never send (the retention
    purge): call it in the same transaction that captured them, with `seq` read
    from `issued_seq` just before, and before anything else is captured. The
    counter goes back to `seq`, so the next record is `seq + 1` and HQ never waits
    on a gap. Returns how many records were dropped.
    """
    dropped = int(conn.execute(f"DELETE FROM {OUTBOX_TABLE} WHERE seq > ?", [seq]).rowcount)
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", [seq, OUTBOX_TABLE])
    return dropped


def outbox_stats(conn: Connection) -> dict[str, Any]:
    """Count, first and last seq of the outbox."""
    count, first, last = conn.execute(
        f"SELECT count(*), min(seq), max(seq) FROM {OUTBOX_TABLE}"
    ).fetchone()
    return {"count": count, "first_seq": first, "last_seq": last}


__all__ = [
    "OUTBOX_DDL", "Change", "discard_since", "install_capture", "issued_seq", "iter_changes",
    "latest_hlc", "outbox_stats", "register_clock",
]
