"""Named, recorded schema migrations of the HQ store, on SQLite and on PostgreSQL.

Each migration runs once, in one transaction together with the row that
records it in `hq_migrations` (name, applied_at). Openers race safely: on
PostgreSQL the transaction first takes an advisory lock, on SQLite
`BEGIN IMMEDIATE` already holds the write lock, and the migration is skipped
when it is recorded by the time the lock is held. A store made before
migrations were recorded (the old list of CREATE TABLE IF NOT EXISTS) upgrades:
`0001_initial` finds its tables and records itself, later migrations run.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from hq import projections
from hq.dbapi import Tx

Migration = tuple[str, Callable[[Tx], None]]
LOCK_KEY = 0x4B48_4D51  # PostgreSQL advisory lock of HQ schema changes ("KHMQ")
LEDGER = """CREATE TABLE IF NOT EXISTS hq_migrations (
    name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"""

INITIAL = (
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
)


def _initial(tx: Tx) -> None:
    """The tables of the first release (kept IF NOT EXISTS: stores made before the ledger)."""
    for ddl in INITIAL:
        tx.execute(ddl)


def _projections(tx: Tx) -> None:
    """Typed, indexed projection tables, filled from the merge state already held."""
    for ddl in projections.ddl():
        tx.execute(ddl)
    projections.rebuild(tx)


FLEET_KEYS = (
    """CREATE TABLE IF NOT EXISTS hq_fleet_keys (
        version BIGINT PRIMARY KEY, key_enc TEXT, created_at TEXT NOT NULL, retired_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS hq_fleet_delivery (
        node_id TEXT NOT NULL, version BIGINT NOT NULL, down_seq BIGINT NOT NULL,
        PRIMARY KEY (node_id, version))""",
    """CREATE TABLE IF NOT EXISTS hq_pii_reads (
        id TEXT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, citizen_id TEXT NOT NULL,
        purpose TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS hq_pii_reads_citizen ON hq_pii_reads (citizen_id, at)",
)


def _fleet_keys(tx: Tx) -> None:
    """Fleet blind-index keys (wrapped under HQ's field key), their delivery to each node,
    and the audit of HQ's reads of citizen data (hq/pii.py, hq/fleet_keys.py)."""
    for ddl in FLEET_KEYS:
        tx.execute(ddl)


DECISIONS = (
    """CREATE TABLE IF NOT EXISTS hq_decisions (
        node_id TEXT NOT NULL, seq BIGINT NOT NULL, reference TEXT NOT NULL,
        status TEXT NOT NULL, reason TEXT, created_at TEXT NOT NULL,
        PRIMARY KEY (node_id, seq))""",
    "CREATE INDEX IF NOT EXISTS hq_decisions_reference ON hq_decisions (reference)",
    "CREATE INDEX IF NOT EXISTS hq_decisions_created ON hq_decisions (created_at)",
)


DECISION_INSERT = ("INSERT INTO hq_decisions (node_id, seq, reference, status, reason, "
                   "created_at) VALUES (?, ?, ?, ?, ?, ?)")


def decision_row(node_id: str, seq: int, payload: object, created_at: str) -> list[object]:
    """One hq_decisions row of a queued decision (a malformed payload kept as text)."""
    data = payload if isinstance(payload, dict) else {}
    reason = data.get("reason")
    return [node_id, seq, str(data.get("reference"))[:200], str(data.get("status"))[:40],
            reason if isinstance(reason, str) else None, created_at]


def _decisions(tx: Tx) -> None:
    """Decisions by reference (what HQ checks before sending and `edge-hq decisions` lists),
    filled from the decisions already queued; application projections gain the reason."""
    for ddl in DECISIONS:
        tx.execute(ddl)
    rows = tx.execute("SELECT node_id, seq, payload, created_at FROM hq_down "
                      "WHERE kind = 'decision'").fetchall()
    if rows:
        tx.executemany(DECISION_INSERT + " ON CONFLICT (node_id, seq) DO NOTHING",
                       [decision_row(n, seq, json.loads(p), at) for n, seq, p, at in rows])
    tx.execute(f"DROP TABLE IF EXISTS {projections.PROJECTIONS['applications'].table}")
    for ddl in projections.ddl():
        tx.execute(ddl)
    projections.rebuild(tx, ["applications"])


LOOKUPS = (
    """CREATE TABLE IF NOT EXISTS hq_citizen_lookups (
        id TEXT PRIMARY KEY, at TEXT NOT NULL, node_id TEXT NOT NULL, actor TEXT NOT NULL,
        request_id TEXT NOT NULL, outcome TEXT NOT NULL, citizen_id TEXT)""",
    "CREATE INDEX IF NOT EXISTS hq_citizen_lookups_node ON hq_citizen_lookups (node_id, at)",
)


def has_column(tx: Tx, table: str, column: str) -> bool:
    """Whether `table` has `column` (SQLite or PostgreSQL)."""
    if tx.dialect == "sqlite":
        sql = "SELECT 1 FROM pragma_table_info(?) WHERE name = ?"
    else:
        sql = ("SELECT 1 FROM information_schema.columns WHERE table_schema = "
               "current_schema() AND table_name = ? AND column_name = ?")
    return tx.execute(sql, [table, column]).fetchone() is not None


def _persons(tx: Tx) -> None:
    """One person across centers (`hq_citizens.person_id`, linked by the fleet index) and
    the audit of nodes' citizen lookups at HQ (hq/lookups.py)."""
    if not has_column(tx, "hq_citizens", "person_id"):
        tx.execute("ALTER TABLE hq_citizens ADD COLUMN person_id TEXT")
    for ddl in (*projections.ddl(), *LOOKUPS):
        tx.execute(ddl)
    projections.link_persons(tx, None, [])


CONSOLE = (
    """CREATE TABLE IF NOT EXISTS hq_accounts (
        username TEXT PRIMARY KEY, role TEXT NOT NULL, agency TEXT, password_hash TEXT NOT NULL,
        totp_secret_enc TEXT NOT NULL, totp_last_step BIGINT NOT NULL DEFAULT 0,
        failed_count BIGINT NOT NULL DEFAULT 0, locked_until TEXT,
        active INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS hq_actions (
        id TEXT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT, outcome TEXT NOT NULL, client TEXT)""",
    "CREATE INDEX IF NOT EXISTS hq_actions_at ON hq_actions (at)",
    "CREATE INDEX IF NOT EXISTS hq_actions_actor ON hq_actions (actor, at)",
)


def _console(tx: Tx) -> None:
    """HQ console accounts (Argon2id hash, TOTP secret under HQ's field key, lockout) and
    the audit of every console action (hq/console/accounts.py, hq/console/actions.py)."""
    for ddl in CONSOLE:
        tx.execute(ddl)


def _action_detail(tx: Tx) -> None:
    """A free-text detail on an audited console action (e.g. why a node was revoked)."""
    if not has_column(tx, "hq_actions", "detail"):
        tx.execute("ALTER TABLE hq_actions ADD COLUMN detail TEXT")


CENTER_STAFF = (
    """CREATE TABLE IF NOT EXISTS hq_center_staff (
        id TEXT PRIMARY KEY, center_id TEXT NOT NULL, username TEXT NOT NULL,
        full_name TEXT NOT NULL, role TEXT NOT NULL, password_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1, language TEXT NOT NULL DEFAULT 'en',
        version BIGINT NOT NULL DEFAULT 1, updated_at TEXT NOT NULL,
        UNIQUE (center_id, username))""",
)


def _center_staff(tx: Tx) -> None:
    """Center staff accounts HQ has published downstream (Argon2id hash only, never a
    password in clear): hq/console/center_staff.py."""
    for ddl in CENTER_STAFF:
        tx.execute(ddl)


def _api_tokens(tx: Tx) -> None:
    """Bearer tokens of the read-only JSON API: only a SHA-256 of each is kept, with the
    account, role and agency it acts for (hq/console/api_tokens.py)."""
    tx.execute("""CREATE TABLE IF NOT EXISTS hq_api_tokens (
        token_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, username TEXT NOT NULL,
        role TEXT NOT NULL, agency TEXT, created_at TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0)""")


def _catalog_draft(tx: Tx) -> None:
    """HQ's catalog draft: the services it edits before publishing a new catalog version,
    and the rest of the catalog they came from (hq/console/catalog.py)."""
    tx.execute("""CREATE TABLE IF NOT EXISTS hq_catalog_services (
        code TEXT PRIMARY KEY, agency_code TEXT NOT NULL, name_en TEXT NOT NULL,
        name_ur TEXT NOT NULL, standard_minutes INTEGER NOT NULL, fee_pkr BIGINT NOT NULL,
        documents TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
        position INTEGER NOT NULL, updated_at TEXT NOT NULL)""")
    tx.execute("""CREATE TABLE IF NOT EXISTS hq_catalog_base (
        id INTEGER PRIMARY KEY, catalog_version BIGINT NOT NULL, payload TEXT NOT NULL,
        imported_at TEXT NOT NULL)""")


MIGRATIONS: tuple[Migration, ...] = (
    ("0001_initial", _initial),
    ("0002_projections", _projections),
    ("0003_fleet_keys", _fleet_keys),
    ("0004_decisions", _decisions),
    ("0005_persons", _persons),
    ("0006_console", _console),
    ("0007_action_detail", _action_detail),
    ("0008_center_staff", _center_staff),
    ("0009_api_tokens", _api_tokens),
    ("0010_catalog_draft", _catalog_draft),
)


def applied(db: Tx) -> list[str]:
    """Names of the migrations recorded in the store, in the order they ran."""
    with db.transaction() as tx:
        tx.execute(LEDGER)
        rows = tx.execute("SELECT name FROM hq_migrations ORDER BY applied_at, name").fetchall()
    return [str(name) for (name,) in rows]


def migrate(db: Tx, now: Callable[[], str]) -> list[str]:
    """Run every migration not yet recorded; return the names run now."""
    ran: list[str] = []
    for name, step in MIGRATIONS:
        with db.transaction() as tx:
            if tx.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", [LOCK_KEY])
            tx.execute(LEDGER)
            if tx.execute("SELECT 1 FROM hq_migrations WHERE name = ?", [name]).fetchone():
                continue
            step(tx)
            tx.execute("INSERT INTO hq_migrations (name, applied_at) VALUES (?, ?)",
                       [name, now()])
        ran.append(name)
    return ran
