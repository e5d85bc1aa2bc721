"""The node key file: database key, PII field key and blind-index key.

The file is JSON with hex keys, created once by `edge-node init` with mode
0600. Losing it makes the database unreadable, so backups must include it
(kept apart from the database copy).
"""

from __future__ import annotations

import json
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from certs.files import create_new

KEY_BYTES = 32
KEY_NAMES = ("db_key", "pii_key", "index_key")


class KeyFileError(RuntimeError):
    """The key file is missing, malformed or readable by others."""


@dataclass(frozen=True)
class NodeKeys:
    """The node's secret keys (raw bytes)."""

    db_key: bytes
    pii_key: bytes
    index_key: bytes

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
        return NodeKeys(**{name: bytes.fromhex(data[name]) for name in KEY_NAMES})
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: key file is malformed") from exc
