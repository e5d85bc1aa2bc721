"""HQ storage over SQLite (default, embedded) or PostgreSQL (`postgresql://…`).

SQL is written once with `?` placeholders and portable types; for PostgreSQL
the placeholders become `%s`. Each unit of work is one transaction.

The schema is a list of named migrations (hq/migrations.py), run on open and
recorded in `hq_migrations`.

HQ holds every center's data, so the SQLite store is encrypted with SQLCipher
(as on the node) under a raw 256-bit key kept in `<db>.key` beside it (hex,
mode 0600), made together with the store on first open; the store file is
0600 and a directory made for it 0700 (an existing one others can write to is
refused). A key file that group or others can read, or a store without its
key, is refused. PostgreSQL encrypts nothing itself: a
connection to another host must ask for TLS (`sslmode=require` or stricter),
and disk encryption and a least-privilege role are the operator's
(README "HQ store protection").
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import sqlcipher3

from certs.files import create_new
from hq import pii, pii_keys
from hq.migrations import migrate

RETRIES = 8
KEY_SUFFIX = ".key"
KEY_BYTES = 32
TLS_MODES = frozenset({"require", "verify-ca", "verify-full"})
LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})

T = TypeVar("T")


class StoreError(RuntimeError):
    """The HQ store cannot be opened safely (key file, permissions, no TLS); one sentence."""


class HQDatabase:
    """One connection to the HQ store; use `transaction()` for every unit of work."""

    def __init__(self, url: str, pii_key_file: Path | str | None = None) -> None:
        """Open `postgresql://…`, `sqlite:///path` or a plain file path.

        `pii_key_file`: HQ's PII field key (hq/pii.py); by default `<db>.pii.key`
        beside a SQLite store, and EDGE_HQ_PII_KEY for PostgreSQL.
        """
        self.url = url
        self.pii_keys: pii_keys.Keyring | None = None
        self.dialect = "postgresql" if url.startswith(("postgresql://", "postgres://")) \
            else "sqlite"
        if self.dialect == "postgresql":
            import psycopg

            require_tls(url)
            self.conn: Any = psycopg.connect(url, autocommit=True)
        else:
            self.conn = open_sqlcipher(Path(url.removeprefix("sqlite:///")))
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
        migrate(self, utc_now)
        self._open_pii_key(Path(pii_key_file) if pii_key_file else None)

    def _open_pii_key(self, given: Path | None) -> None:
        """Load (make on a store's first use) HQ's PII field key and check it is the store's."""
        db_file = None if self.dialect == "postgresql" else \
            Path(self.url.removeprefix("sqlite:///"))
        path = given or pii.default_key_file(self.dialect, db_file)
        if path is None:
            return
        try:
            with self.transaction() as tx:
                known = tx.execute("SELECT 1 FROM hq_meta WHERE key = ?",
                                   [pii_keys.KEY_ID_META]).fetchone()
                ring = pii_keys.load(path, create=known is None)
                pii_keys.bind(tx, ring)
        except pii_keys.PIIKeyError as exc:
            self.conn.close()
            raise StoreError(str(exc)) from exc
        self.pii_keys = ring

    def _sql(self, sql: str) -> str:
        """Placeholders in the connection's style."""
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (inside a transaction) and return the cursor."""
        return self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (inside a transaction)."""
        if self.dialect == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

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

    def retrying(self, fn: Callable[[HQDatabase], T]) -> T:
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
    return isinstance(exc, sqlite3.OperationalError | sqlcipher3.OperationalError) and \
        "locked" in str(exc)


def key_path(db_path: Path) -> Path:
    """Where the store's SQLCipher key lives: `<db>.key` beside it."""
    return db_path.with_name(db_path.name + KEY_SUFFIX)


def open_sqlcipher(path: Path) -> Any:
    """Open (creating on first use: 0700 directory, 0600 file, new key) the encrypted store."""
    key_file = key_path(path)
    if not path.exists():
        _create_store(path, key_file)
    key = _read_key(key_file)
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False,
                              timeout=30)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")  # raw key: no PBKDF2 on each open
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: cannot read the HQ store (wrong key file {key_file.name}, "
                         "or not an encrypted HQ store)") from exc
    return conn


def _create_store(path: Path, key_file: Path) -> None:
    """A new key file (0600, unless one exists) and an empty store file (0600), in a
    private directory."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    mode = directory.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):  # others could swap the key file or the store
        raise StoreError(f"{directory}: other users can write to this directory (mode "
                         f"{oct(mode & 0o777)}); keep the HQ store in a directory of its own "
                         f"with mode 0700 (chmod 700 {directory})")
    if not key_file.exists():  # a key made ahead (e.g. from a systemd credential) is kept
        create_new(key_file, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # WAL/SHM copy it


def _read_key(key_file: Path) -> bytes:
    """The 32-byte key, refusing a missing, malformed or group/world-readable file."""
    try:
        mode = key_file.stat().st_mode
    except FileNotFoundError as exc:
        raise StoreError(f"{key_file}: the HQ store's key file is missing (it was made "
                         "with the store; restore it from the key backup)") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError(f"{key_file}: key file is readable by other users (mode "
                         f"{oct(mode & 0o777)}); fix with: chmod 600 {key_file}")
    try:
        key = bytes.fromhex(key_file.read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{key_file}: key file is malformed") from exc
    if len(key) != KEY_BYTES:
        raise StoreError(f"{key_file}: key file is malformed")
    return key


def require_tls(url: str) -> None:
    """Refuse a PostgreSQL URL that would carry HQ's data to another host without TLS."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", [""])[0]
    if host in LOCAL_HOSTS or host.startswith("/"):
        return  # loopback or a Unix socket: nothing crosses a network
    if query.get("sslmode", [""])[0] not in TLS_MODES:
        raise StoreError(f"PostgreSQL at {host} without TLS: add ?sslmode=verify-full "
                         "(or require) to the --db URL")


def utc_now() -> str:
    """Current time in storage form."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
