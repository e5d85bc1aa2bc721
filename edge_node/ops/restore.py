"""Restoring a backup over the node database, with the node stopped.

Nothing is replaced until the backup passed every check: manifest sha256,
then a private copy opened with this node's key, `integrity_check`ed and
found to be this node's. The replaced database is kept as
`node.db.before-restore-<time>`; the swap itself is one rename.

The restored outbox counter is behind what HQ already holds (records made
after the backup reached HQ, then were lost with the disk). So the restored
database gets a *restore point*: records made after it are held back until HQ
says where new seqs may start (edge_node/replication/port.py, hq/resume.py).
Records HQ holds but the restored node lost stay HQ-only.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from certs.files import rename_durably
from certs.layout import NODE_CERT
from edge_node.config import Settings
from edge_node.domain import audit, epoch
from edge_node.ids import business_date, utcnow
from edge_node.node import Node
from edge_node.ops.backup import (
    BackupError,
    check_copy,
    db_keys,
    fsync_path,
    read_manifest,
    sha256_of,
)
from edge_node.paths import db_path, exported_through, is_enrolled, sync_dir, write_exported
from edge_node.replication.port import (
    restore_audit_seq,
    restore_point,
    set_restore_point,
)
from edge_node.replication.runtime import SyncLock
from edge_node.store import meta
from edge_node.store.db import DatabaseError, StoreError, open_database
from edge_node.store.keyfile import NodeKeys
from sync.identity import load_cert

log = logging.getLogger(__name__)
SHM_DMS_OFFSET = 128  # SQLite's "dead man switch" byte in the -shm file: every open
COPY_CHUNK_BYTES = 1 << 20  # connection holds a shared lock on it


@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    node_id: str
    restored_seq: int
    kept: Path | None
    discarded: int


def database_in_use(path: Path) -> bool:
    """True when some process has the SQLite database open (WAL mode: its -shm lock).

    An open-file-description lock conflicts with SQLite's POSIX locks even in
    this process; a crashed process leaves no lock, so a stale -shm is not "in use".
    """
    try:
        fd = os.open(f"{path}-shm", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        lock = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, SHM_DMS_OFFSET, 1, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
        except OSError:
            return True
        unlock = struct.pack("hhqqi", fcntl.F_UNLCK, os.SEEK_SET, SHM_DMS_OFFSET, 1, 0)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, unlock)
        return False
    finally:
        os.close(fd)


def hold_stopped_node(settings: Settings, action: str) -> SyncLock:
    """Refuse while `edge-node serve` (or any process) uses the node; take the sync lock."""
    lock = SyncLock(settings)
    if not Path(settings["data_dir"]).is_dir():
        raise BackupError(f"{settings['data_dir']}: no such data directory")
    if not lock.acquire():
        raise BackupError(f"cannot {action} while the node is running (another edge-node "
                          "process holds the sync lock): stop it first, e.g. "
                          "`systemctl stop edge-node`")
    if database_in_use(db_path(settings)):
        lock.release()
        raise BackupError(f"cannot {action} while the node is running (node.db is open in "
                          "another process): stop it first, e.g. `systemctl stop edge-node`")
    return lock


def restore_backup(settings: Settings, keys: NodeKeys, file: Path, force: bool = False,
                   now: Callable[[], datetime] = utcnow) -> Restored:
    """Check `file`, keep the current database aside, and put the backup in its place."""
    lock = hold_stopped_node(settings, "restore")
    try:
        manifest = read_manifest(file)
        if sha256_of(file) != manifest["sha256"]:
            raise BackupError(f"{file.name}: damaged (checksum does not match its manifest); "
                              "nothing was changed")
        current = _current_state(settings, keys, manifest)
        if current["node_id"] not in (None, manifest["node_id"]):
            raise BackupError(f"{file.name} is a backup of node {manifest['node_id']}, this is "
                              f"node {current['node_id']}; nothing was changed")
        staged = _stage(settings, keys, file, manifest,
                        (business_date(now(), settings["timezone"]), current["epoch"]))
        try:
            if current["newer"] and not force:
                raise BackupError(
                    f"the current database holds {current['newer']} unsynced records made "
                    f"after this backup; sync them first (`edge-node sync push` or `edge-node "
                    f"sync export`), or restore with --force to discard them")
            kept = _swap(settings, keys, staged, now())
        finally:
            staged.unlink(missing_ok=True)
        restored_seq = _restored_seq(settings, keys)
        _cap_exported_marker(Path(settings["data_dir"]), restored_seq)
    finally:
        lock.release()
    log.info("restored %s (restore point seq %d)", file.name, restored_seq)
    return Restored(manifest["node_id"], restored_seq, kept, current["newer"])


def _current_state(settings: Settings, keys: NodeKeys,
                   manifest: dict[str, Any]) -> dict[str, Any]:
    """The node id of the database being replaced and its unsynced records newer than the backup.

    A missing or unreadable database (the usual reason to restore) has nothing
    to lose; its identity then comes from the sync certificate, if any.
    """
    path = db_path(settings)
    state: dict[str, Any] = {"node_id": _enrolled_node_id(settings), "newer": 0, "epoch": 0}
    if not path.exists():
        return state
    try:
        db = open_database(path, db_keys(settings, keys))
    except StoreError:
        return state
    try:
        facts = meta.read_all(db)
        after = max(int(facts.get(meta.ACKED_KEY, 0)), int(manifest["outbox_seq"]))
        state["newer"] = db.execute("SELECT count(*) FROM sync_outbox WHERE seq > ?",
                                    [after]).fetchone()[0]
        state["node_id"] = facts.get(meta.NODE_ID_KEY, state["node_id"])
        state["epoch"] = epoch.current(db)[0]
    except DatabaseError:
        log.warning("current database unreadable; restoring over it")
    finally:
        db.close()
    return state


def _enrolled_node_id(settings: Settings) -> str | None:
    """The CN of the node certificate, when the node is enrolled."""
    if not is_enrolled(settings):
        return None

    try:
        cert = load_cert(sync_dir(settings) / NODE_CERT)
    except (OSError, ValueError):
        return None

    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _stage(settings: Settings, keys: NodeKeys, file: Path, manifest: dict[str, Any],
           restore_day_epoch: tuple[str, int]) -> Path:
    """A checked private copy of the backup, with its restore point and a new restore epoch.

    `restore_day_epoch`: today's business day and the replaced database's epoch.
    """
    staged = db_path(settings).with_name(f"{db_path(settings).name}.restoring")
    for leftover in (staged, Path(f"{staged}-wal"), Path(f"{staged}-shm")):
        leftover.unlink(missing_ok=True)
    try:
        if _copy_hashing(file, staged) != manifest["sha256"]:
            raise BackupError(f"{file.name}: changed while being read; nothing was changed")
        facts = check_copy(staged, db_keys(settings, keys))
        if facts["node_id"] != manifest["node_id"]:
            raise BackupError(f"{file.name}: the database inside is of node {facts['node_id']}, "
                              f"its manifest says {manifest['node_id']}; nothing was changed")
        _mark_restore_point(staged, db_keys(settings, keys), *restore_day_epoch)
        fsync_path(staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy a file to a new 0600 file (fsynced) and return the SHA-256 of what was copied."""
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _mark_restore_point(path: Path, keys: NodeKeys | None, day: str, replaced_epoch: int
                        ) -> None:
    """Hold back records made from now on until HQ says where their seqs may start.

    A backup taken while an earlier restore point was pending keeps that lower
    point: records above it were never reconciled with HQ. The point also
    keeps the audit head, where HQ's answer re-links the chain; and a new
    restore epoch starts, above the backup's and the replaced database's, so
    tickets and references issued before HQ answers cannot repeat old ones.
    """
    db = open_database(path, keys)
    try:
        with db.atomic():
            pending = restore_point(db)
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sync_outbox'")
            issued = row.fetchone()
            seq = pending[0] if pending else (int(issued[0]) if issued else 0)
            audit_seq = restore_audit_seq(db) if pending else audit.head(db)[0]
            set_restore_point(db, seq, uuid.uuid4().hex, audit_seq)
            epoch.begin(db, day, replaced_epoch)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def _swap(settings: Settings, keys: NodeKeys, staged: Path, moment: datetime) -> Path | None:
    """Keep the current database as node.db.before-restore-<time>, rename the copy over it."""
    path = db_path(settings)
    kept: Path | None = None
    if path.exists():
        _checkpoint(path, db_keys(settings, keys))
        kept = path.with_name(f"{path.name}.before-restore-{moment:%Y%m%dT%H%M%SZ}")
        try:
            os.link(path, kept)
        except OSError:
            shutil.copy2(path, kept)
        for suffix in ("-wal", "-shm"):  # an old WAL must never be replayed into the copy
            side = Path(f"{path}{suffix}")
            if side.exists():
                rename_durably(side, Path(f"{kept}{suffix}"))
    rename_durably(staged, path)
    return kept


def _checkpoint(path: Path, keys: NodeKeys | None) -> None:
    """Fold the WAL into the database file (the last close then removes it), if readable."""
    try:
        db = open_database(path, keys)
    except StoreError:
        return
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except DatabaseError:
        log.warning("could not checkpoint the replaced database; its WAL is kept beside it")
    finally:
        db.close()


def _restored_seq(settings: Settings, keys: NodeKeys) -> int:
    """The restore point now in force."""
    db = open_database(db_path(settings), db_keys(settings, keys))
    try:
        point = restore_point(db)
    finally:
        db.close()
    return point[0] if point else 0


def _cap_exported_marker(data_dir: Path, restored_seq: int) -> None:
    """Exports above the restore point were of records this database no longer has."""
    if exported_through(data_dir) > restored_seq:
        write_exported(data_dir, restored_seq)


def record_restore(settings: Settings, file: Path, restored: Restored) -> None:
    """An audit entry on the restored node (HQ sees the chain fork at this point)."""
    node = Node(settings)
    try:
        now = node.timestamp()
        node.write(lambda db: audit.append(db, None, "node.restore", "node", restored.node_id,
                                           now, {"backup": file.name,
                                                 "restored_seq": restored.restored_seq}))
    finally:
        node.close()
