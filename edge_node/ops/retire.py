"""Retiring a node: never strand records HQ has not received, then erase data and keys.

Records are safe to erase once HQ acknowledged them, or once they were
exported to a bundle (`edge-node sync export` records the highest exported seq
in `<data_dir>/exported_seq`). Wiping overwrites the key files before
unlinking them: the database and every backup are encrypted with the node
key, so without it they are unreadable (on SSDs and journaling file systems an
overwrite is best effort; dispose of the disk as policy says).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from certs.files import fsync_dir
from edge_node.config import Settings
from edge_node.ops.backup import db_keys, list_backups, manifest_path
from edge_node.paths import (
    backup_dir,
    db_path,
    exported_marker,
    exported_through,
    key_path,
    lock_path,
    sync_dir,
)
from edge_node.store import meta
from edge_node.store.db import open_database
from edge_node.store.keyfile import NodeKeys


@dataclass(frozen=True)
class Readiness:
    """What stands between a node and its retirement."""

    node_id: str
    unsynced: int
    first_seq: int | None
    last_seq: int | None
    exported: int
    stranded: int  # unsynced and not in any export bundle

    @property
    def ready(self) -> bool:
        """True when wiping loses nothing that HQ does not have or cannot get from a bundle."""
        return self.stranded == 0


def readiness(settings: Settings, keys: NodeKeys) -> Readiness:
    """Unsynced records and how far they were exported (StoreError when unreadable)."""
    exported = exported_through(Path(settings["data_dir"]))
    db = open_database(db_path(settings), db_keys(settings, keys))
    try:
        facts = meta.read_all(db)
        acked = int(facts.get(meta.ACKED_KEY, 0))
        count, first, last = db.execute(
            "SELECT count(*), min(seq), max(seq) FROM sync_outbox WHERE seq > ?",
            [acked]).fetchone()
        stranded = db.execute("SELECT count(*) FROM sync_outbox WHERE seq > ?",
                              [max(acked, exported)]).fetchone()[0]
    finally:
        db.close()
    return Readiness(facts[meta.NODE_ID_KEY], count, first, last, exported, stranded)


def wipe(settings: Settings, node_id: str | None) -> list[Path]:
    """Overwrite and remove the key files; remove database, WAL, backups and sync keys."""
    data_dir = Path(settings["data_dir"])
    removed: list[Path] = []
    for key in (key_path(settings), *_files(sync_dir(settings))):
        if key.is_file():
            shred(key)
            removed.append(key)
    if sync_dir(settings).is_dir():
        shutil.rmtree(sync_dir(settings))
        removed.append(sync_dir(settings))
    database = db_path(settings)
    for path in [database, Path(f"{database}-wal"), Path(f"{database}-shm"),
                 *data_dir.glob(f"{database.name}.before-restore-*"),
                 *data_dir.glob(f"{database.name}.restoring*"),
                 exported_marker(data_dir), lock_path(settings)]:
        if path.is_file():
            path.unlink()
            removed.append(path)
    if backup_dir(settings).is_dir():
        for backup in list_backups(backup_dir(settings), node_id):
            backup.path.unlink(missing_ok=True)
            manifest_path(backup.path).unlink(missing_ok=True)
            removed.append(backup.path)
    if data_dir.is_dir():
        fsync_dir(data_dir)  # the unlinks, durably
    return removed


def _files(directory: Path) -> list[Path]:
    """Regular files under `directory` (none when it does not exist)."""
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []


def shred(path: Path) -> None:
    """Overwrite a file with random bytes, fsync, then unlink it."""
    size = path.stat().st_size
    path.chmod(0o600)
    with path.open("r+b") as handle:
        handle.write(os.urandom(max(size, 1)))
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()

