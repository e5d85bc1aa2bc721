"""The node key file: database key, PII field key and blind-index key; and the fleet key file.

The file is JSON with hex keys, created once by `edge-node init` with mode
0600. Losing it makes the database unreadable, so backups must include it
(kept apart from the database copy).

The fleet blind-index key (sync/pii.py) comes from HQ, sealed to the node's
enrollment key; once opened it is kept in the sync directory's `fleet.key`
(JSON, mode 0600): the current version and the one before it, so a citizen
still indexed under the previous version is found while the node re-indexes.
"""

from __future__ import annotations

import json
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from certs.files import create_new, write_atomic

KEY_BYTES = 32
KEY_NAMES = ("db_key", "pii_key", "index_key")
FLEET_KEYS_KEPT = 2  # the current fleet key version and the one before it
FleetKeys = tuple[tuple[int, bytes], ...]  # (version, key), newest first


class KeyFileError(RuntimeError):
    """The key file is missing, malformed or readable by others."""


@dataclass(frozen=True)
class NodeKeys:
    """The node's secret keys (raw bytes)."""

    db_key: bytes
    pii_key: bytes
    index_key: bytes
    fleet: FleetKeys = ()

    @property
    def fleet_current(self) -> tuple[int, bytes] | None:
        """The newest fleet key (version, key), or None before HQ sent one."""
        return self.fleet[0] if self.fleet else None

    def __repr__(self) -> str:
        """Never show key material, even in tracebacks."""
        return "NodeKeys(<redacted>)"


def create_key_file(path: Path) -> NodeKeys:
    """Create a new key file with mode 0600; refuse to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {name: secrets.token_hex(KEY_BYTES) for name in KEY_NAMES}
    try:
        create_new(path, json.dumps({"version": 1, **keys}).encode("utf-8"))
    except FileExistsError as exc:
        raise KeyFileError(f"{path}: key file exists already; refusing to overwrite") from exc
    return load_key_file(path)


def load_key_file(path: Path, check_mode: bool = True) -> NodeKeys:
    """Read the key file, refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: key file not found; run `edge-node init` first") from exc
    if check_mode and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: key file is readable by other users (mode {oct(mode & 0o777)}); "
            f"fix with: chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        db_key, pii_key, index_key = (bytes.fromhex(data[name]) for name in KEY_NAMES)
        return NodeKeys(db_key, pii_key, index_key)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: key file is malformed") from exc


def load_fleet_keys(path: Path) -> FleetKeys:
    """The fleet keys kept in `path` (newest first); () when the node has none yet."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return ()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: fleet key file is readable by other users (mode "
                           f"{oct(mode & 0o777)}); fix with: chmod 600 {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = tuple((int(v), bytes.fromhex(k)) for v, k in data["keys"].items())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path}: fleet key file is malformed") from exc
    return tuple(sorted(keys, reverse=True))


def save_fleet_key(path: Path, version: int, key: bytes) -> FleetKeys:
    """Add fleet key `version` to `path` (0600, atomic), keeping FLEET_KEYS_KEPT newest."""
    known = dict(load_fleet_keys(path))
    known[version] = key
    kept = sorted(known.items(), reverse=True)[:FLEET_KEYS_KEPT]
    body = {"version": 1, "keys": {str(v): k.hex() for v, k in kept}}
    write_atomic(path, json.dumps(body, sort_keys=True).encode("utf-8"))
    return tuple(kept)
