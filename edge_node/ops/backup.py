"""Encrypted online backups of the node database: copy, check, manifest, rotation.

A backup is made with SQLite's online backup API from a read connection, so
staff keep working while it runs (WAL: the copy is one consistent snapshot and
writers are never blocked). The copy is a SQLCipher file keyed with the node's
own database key; it is fsynced, opened again and `integrity_check`ed, and only
then renamed into place as `node-<UTC time>-<seq>.db` (mode 0600) next to a
JSON manifest (node, center, outbox seq, acked seq, migrations, sha256).

The key file is NOT in the backup. Without it a backup cannot be opened, so
keep a copy of the key file somewhere else (sealed envelope, HQ key escrow),
never next to the backups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlcipher3

from certs.files import rename_durably, write_atomic
from edge_node.config import ConfigError, Settings
from edge_node.errors import EdgeError
from edge_node.ids import iso, utcnow
from edge_node.paths import backup_dir, db_path
from edge_node.store import meta
from edge_node.store.db import DatabaseError, connect
from edge_node.store.keyfile import NodeKeys

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "node-", ".db"
MANIFEST_VERSION = 1
STAMP_FORMAT = "%Y%m%dT%H%M%S"
MANIFEST_FIELDS = ("node_id", "sha256", "outbox_seq", "size")


class BackupError(EdgeError):
    """A backup cannot be made, read or trusted; the message says which and why."""


@dataclass(frozen=True)
class Backup:
    """A backup file and its manifest."""

    path: Path
    manifest: dict[str, Any]


def db_keys(settings: Settings, keys: NodeKeys) -> NodeKeys | None:
    """The key the database is encrypted with (None for a plain development database)."""
    return keys if settings["encrypt_db"] else None


def manifest_path(path: Path) -> Path:
    """`node-….json` next to `node-….db`."""
    return path.with_suffix(".json")


def open_copy(path: Path, keys: NodeKeys | None) -> Any:
    """A connection to a database file with the node key, touching nothing else."""
    if keys is None:
        conn: Any = sqlite3.connect(str(path))
    else:
        conn = sqlcipher3.connect(str(path))
        conn.execute(f"PRAGMA key = \"x'{keys.db_key.hex()}'\"")
    return conn


def check_copy(path: Path, keys: NodeKeys | None) -> dict[str, Any]:
    """Open a copy with the key, run the integrity checks and read its facts."""
    conn = open_copy(path, keys)
    try:
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except DatabaseError as exc:
            raise BackupError(f"{path.name}: cannot be opened with this node's key file "
                              "(another node's backup, or damaged)") from exc
        problems = _integrity_problems(conn, keys is not None)
        if problems:
            raise BackupError(f"{path.name}: damaged ({problems[:200]})")
        return _facts(conn)
    except DatabaseError as exc:
        raise BackupError(f"{path.name}: damaged ({exc})") from exc
    finally:
        conn.close()


def _integrity_problems(conn: Any, encrypted: bool) -> str:
    """'' when `integrity_check` (and SQLCipher's page HMAC check) find nothing."""
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if rows != ["ok"]:
        return "; ".join(rows)
    if encrypted:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA cipher_integrity_check"))
    return ""


def _facts(conn: Any) -> dict[str, Any]:
    """Node id, center, outbox counter, ack and migrations of an open database."""
    facts = meta.read_all(conn)
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sync_outbox'").fetchone()
    migrations = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    return {"node_id": facts[meta.NODE_ID_KEY], "center_id": facts[meta.CENTER_ID_KEY],
            "outbox_seq": int(seq[0]) if seq else 0,
            "acked_seq": int(facts.get(meta.ACKED_KEY, 0)), "migrations": migrations}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_backup(settings: Settings, keys: NodeKeys, out_dir: Path | None = None,
                  now: Callable[[], datetime] = utcnow) -> Backup:
    """Copy the live database into `out_dir` (default: the backup directory), checked."""
    target_dir = out_dir or backup_dir(settings)
    _make_dir(target_dir, private=out_dir is None)
    moment = now()
    tmp = target_dir / f".{PREFIX}{moment:{STAMP_FORMAT}}.{os.getpid()}.tmp"
    try:
        facts = _copy_live(settings, db_keys(settings, keys), tmp)
        name = f"{PREFIX}{moment:{STAMP_FORMAT}}.{moment.microsecond // 1000:03d}Z-" \
               f"{facts['outbox_seq']}{SUFFIX}"
        path = target_dir / name
        manifest = {"version": MANIFEST_VERSION, "file": name, **facts,
                    "created_at": iso(moment), "encrypted": bool(settings["encrypt_db"]),
                    "size": tmp.stat().st_size, "sha256": sha256_of(tmp),
                    "key": "not included: restore needs this node's key file"}
        write_atomic(manifest_path(path), json.dumps(manifest, indent=2).encode())
        rename_durably(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    log.info("backup %s written (outbox seq %d)", name, facts["outbox_seq"])
    return Backup(path, manifest)


def _make_dir(directory: Path, private: bool) -> None:
    """Create the target directory; the managed backup directory is owner-only."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if private:
            directory.chmod(0o700)
    except OSError as exc:
        raise BackupError(f"{directory}: cannot create the backup directory "
                          f"({exc.strerror})") from exc


def _copy_live(settings: Settings, keys: NodeKeys | None, tmp: Path) -> dict[str, Any]:
    """Online-backup the node database into `tmp` (0600), fsync and check it."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    source = connect(db_path(settings), keys)
    target = open_copy(tmp, keys)
    try:
        source.execute("PRAGMA query_only = ON")
        source.backup(target)
    except OSError as exc:
        raise BackupError(f"{tmp.parent}: cannot write the backup ({exc.strerror})") from exc
    except DatabaseError as exc:
        raise BackupError(f"backup failed: {exc}") from exc
    finally:
        target.close()
        source.close()
    fsync_path(tmp)
    return check_copy(tmp, keys)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest next to a backup file; BackupError when missing or malformed."""
    mpath = manifest_path(path)
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BackupError(f"{mpath}: manifest not found; a backup is the .db file together "
                          "with its .json manifest") from exc
    except (OSError, ValueError) as exc:
        raise BackupError(f"{mpath}: manifest is not readable JSON") from exc
    if not isinstance(manifest, dict) or any(f not in manifest for f in MANIFEST_FIELDS):
        raise BackupError(f"{mpath}: manifest is incomplete")
    return manifest


def list_backups(directory: Path, node_id: str | None = None) -> list[Backup]:
    """Backups in `directory` (of one node when given), oldest first."""
    found: list[Backup] = []
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            manifest = read_manifest(path)
        except BackupError:
            continue
        if node_id is None or manifest["node_id"] == node_id:
            found.append(Backup(path, manifest))
    return found


def rotate(directory: Path, node_id: str, keep: int) -> list[Path]:
    """Delete this node's backups beyond the newest `keep`; return what was removed."""
    if keep < 1:
        raise ConfigError(f"setting 'backup_keep' must be at least 1, got {keep}")
    removed: list[Path] = []
    backups = list_backups(directory, node_id)
    for old in backups[:max(0, len(backups) - keep)]:
        old.path.unlink(missing_ok=True)
        manifest_path(old.path).unlink(missing_ok=True)
        removed.append(old.path)
    return removed


def scheduled_backup(settings: Settings, keys: NodeKeys) -> Backup:
    """The daily job: a backup into the backup directory, then rotation."""
    made = create_backup(settings, keys)
    removed = rotate(made.path.parent, made.manifest["node_id"], settings["backup_keep"])
    if removed:
        log.info("rotation removed %d old backup(s)", len(removed))
    return made


def check_schedule(settings: Settings) -> None:
    """Refuse a backup hour or count out of range (checked when the job is added)."""
    if not 0 <= settings["backup_hour"] <= 23:
        raise ConfigError(f"setting 'backup_hour' must be 0-23, got {settings['backup_hour']}")
    if settings["backup_keep"] < 1:
        raise ConfigError(f"setting 'backup_keep' must be at least 1, got "
                          f"{settings['backup_keep']}")
