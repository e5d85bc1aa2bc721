"""Where a node keeps its files, named in this one module.

`<data_dir>/node.db` (the database), `node.key` (its key file, unless the
`key_file` setting says otherwise), `sync/` (the sync directory, unless
`sync_dir` says otherwise; its files are named in certs/layout.py),
`sync.lock` (one sync agent per node), `exported_seq` (the highest outbox
seq written to an export bundle) and `backups/` (unless `backup_dir` says
otherwise).
"""

from __future__ import annotations

from pathlib import Path

from certs.files import write_atomic
from certs.layout import FLEET_KEY, NODE_CERT
from edge_node.config import Settings

DB_FILE_NAME = "node.db"
KEY_FILE_NAME = "node.key"
SYNC_DIR_NAME = "sync"
LOCK_NAME = "sync.lock"
EXPORTED_MARKER = "exported_seq"
BACKUP_DIR_NAME = "backups"


def db_path(settings: Settings) -> Path:
    """Path of the node database."""
    return Path(settings["data_dir"]) / DB_FILE_NAME


def key_path(settings: Settings) -> Path:
    """Where the key file lives: the setting, or <data_dir>/node.key."""
    return Path(settings["key_file"] or Path(settings["data_dir"]) / KEY_FILE_NAME)


def sync_dir(settings: Settings) -> Path:
    """The node's sync directory: the setting, or <data_dir>/sync."""
    return Path(settings["sync_dir"] or Path(settings["data_dir"]) / SYNC_DIR_NAME)


def fleet_key_path(settings: Settings) -> Path:
    """The fleet blind-index key file (sync/pii.py) inside the sync directory."""
    return sync_dir(settings) / FLEET_KEY


def is_enrolled(settings: Settings) -> bool:
    """True when the sync directory holds a node certificate."""
    return (sync_dir(settings) / NODE_CERT).exists()


def lock_path(settings: Settings) -> Path:
    """The sync agent's lock file (inside the data directory)."""
    return Path(settings["data_dir"]) / LOCK_NAME


def backup_dir(settings: Settings) -> Path:
    """The directory of scheduled backups: the setting, or <data_dir>/backups."""
    return Path(settings["backup_dir"] or Path(settings["data_dir"]) / BACKUP_DIR_NAME)


def exported_marker(data_dir: Path) -> Path:
    """The file that remembers the highest outbox seq written to an export bundle."""
    return data_dir / EXPORTED_MARKER


def exported_through(data_dir: Path) -> int:
    """Highest outbox seq written to an export bundle (0 when none)."""
    try:
        return int(exported_marker(data_dir).read_text().strip())
    except (OSError, ValueError):
        return 0


def write_exported(data_dir: Path, seq: int) -> None:
    """Set the export marker to `seq` (durably)."""
    write_atomic(exported_marker(data_dir), f"{seq}\n".encode())


def note_exported(data_dir: Path, last_seq: int | None) -> None:
    """Remember that records up to `last_seq` are in a bundle (the marker never goes back)."""
    if last_seq is not None and last_seq > exported_through(data_dir):
        write_exported(data_dir, last_seq)
