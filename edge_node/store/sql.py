"""Plain-SQL helpers for hot paths inside the writer.

sqlite-utils' table API introspects the schema and wraps statements in
savepoints on every call; on the ticket path that was most of the writer's
time. These helpers run one parameterised statement on the raw connection
(already inside the writer's transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlite_utils import Database


def insert(db: Database, table: str, row: Mapping[str, Any]) -> None:
    """INSERT one row (column names come from code, never from input)."""
    cols = ", ".join(row)
    marks = ", ".join("?" * len(row))
    db.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))


def insert_many(db: Database, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT rows that share the same columns."""
    if not rows:
        return
    cols = ", ".join(rows[0])
    marks = ", ".join("?" * len(rows[0]))
    db.conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                        [list(r.values()) for r in rows])


def rows(db: Database, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Query results as dicts, without sqlite-utils' savepoint guard."""
    cursor = db.conn.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
