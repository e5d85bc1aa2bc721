"""Named, transactional, recorded schema migrations.

Each migration runs once, inside one transaction together with the row that
records it in `_migrations`; capture triggers are reinstalled afterwards so
they always list the current columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlite_utils import Database

from edge_node.store.schema import (
    APPLICATION_DECISIONS,
    CITIZEN_FIELD_CLOCKS,
    DOMAIN_INDEXES,
    INITIAL,
    SYNCED_TABLES,
)
from sync.changes import OUTBOX_DDL, install_capture

Migration = tuple[str, Callable[[Database], None]]


def _initial(db: Database) -> None:
    """Every table of the first release, and the outbox."""
    db.executescript(INITIAL)
    db.execute(OUTBOX_DDL)


def _domain_indexes(db: Database) -> None:
    """Indexes behind application lists and volunteer shifts.

    One statement at a time: `executescript` would commit the migration's transaction.
    """
    for statement in DOMAIN_INDEXES:
        db.execute(statement)


def _citizen_field_clocks(db: Database) -> None:
    """Citizens carry a clock per field, so edits on two nodes merge field by field."""
    db.execute(CITIZEN_FIELD_CLOCKS)


def _application_decisions(db: Database) -> None:
    """Applications keep the back office's reason and the time of its decision."""
    for statement in APPLICATION_DECISIONS:
        db.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    ("0001_initial", _initial),
    ("0002_domain_indexes", _domain_indexes),
    ("0003_citizen_field_clocks", _citizen_field_clocks),
    ("0004_application_decisions", _application_decisions),
)


def applied(db: Database) -> list[str]:
    """Names of the migrations already applied, in order."""
    if "_migrations" not in db.table_names():
        return []
    return [r["name"] for r in db.query("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = set(applied(db))
    ran: list[str] = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        with db.atomic():
            step(db)
            for table in SYNCED_TABLES:
                install_capture(db.conn, table)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, datetime.now(UTC).isoformat()),
            )
        ran.append(name)
    return ran
