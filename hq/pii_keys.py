"""HQ's PII field key file: its versions, the store's binding to it, and reloading it.

The file (`<db>.pii.key` beside a SQLite store; `--pii-key` / EDGE_HQ_PII_KEY for
PostgreSQL; mode 0600) holds one line per key version, `<version> <64 hex>`; a
file of one bare hex line (as made before rotation existed) is version 1. The
newest version encrypts; every version in the file decrypts (`h<version>:`
values, hq/pii.py). It holds two versions only while `edge-hq pii-key rotate`
runs (hq/pii_rotate.py), which then rewrites it with the new one alone.

`hq_meta.pii_key_id` is the fingerprint of the newest version the store has
been told of; a key file holding no version with that fingerprint is another
store's and is refused. A process whose keys are older than the store's
(a rotation began after it opened) reloads the file on its next use of the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from certs.files import create_new, write_atomic

KEY_BYTES = 32
KEY_ID_META = "pii_key_id"


class Tx(Protocol):
    """What this module needs of a store connection (hq/dbapi.py's Tx holds a Keyring)."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement."""


class PIIKeyError(RuntimeError):
    """HQ's field key is missing, unreadable, malformed or not this store's; one sentence."""


@dataclass(frozen=True)
class Keyring:
    """The versions of HQ's field key one key file holds."""

    path: Path
    keys: dict[int, bytes]

    @property
    def current(self) -> int:
        """The version new values are encrypted under (the newest)."""
        return max(self.keys)

    @property
    def current_id(self) -> str:
        """The fingerprint of the current version."""
        return key_id(self.keys[self.current])


def key_id(key: bytes) -> str:
    """A public fingerprint of one key version (recorded in hq_meta, compared on open)."""
    return hmac.new(key, b"khidmat/hq-pii-key-id", hashlib.sha256).hexdigest()[:32]


def _parse(path: Path, text: str) -> dict[int, bytes]:
    """Versions from the file's text; PIIKeyError when any line is malformed."""
    keys: dict[int, bytes] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    try:
        for parts in lines:
            version, hexkey = (1, parts[0]) if len(parts) == 1 else (int(parts[0]), parts[1])
            key = bytes.fromhex(hexkey)
            if len(parts) > 2 or len(key) != KEY_BYTES or version < 1 or version in keys:
                raise ValueError(version)
            keys[version] = key
    except (ValueError, IndexError) as exc:
        raise PIIKeyError(f"{path}: PII key file is malformed") from exc
    if not keys:
        raise PIIKeyError(f"{path}: PII key file is malformed")
    return keys


def _text(keys: dict[int, bytes]) -> bytes:
    """The file's content for `keys`."""
    return "".join(f"{v} {k.hex()}\n" for v, k in sorted(keys.items())).encode("ascii")


def load(path: Path, create: bool) -> Keyring:
    """The key file's versions (a new file of version 1, 0600, when absent and `create`)."""
    if not path.exists() and create:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another opener made it: use theirs
            create_new(path, _text({1: secrets.token_bytes(KEY_BYTES)}))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise PIIKeyError(f"{path}: HQ's PII field key file is missing (restore it from the "
                          "key backup; without it HQ cannot read citizens' data)") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PIIKeyError(f"{path}: key file is readable by other users (mode "
                          f"{oct(mode & 0o777)}); fix with: chmod 600 {path}")
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise PIIKeyError(f"{path}: PII key file is malformed") from exc
    return Keyring(path, _parse(path, text))


def save(ring: Keyring) -> None:
    """Replace the key file with `ring`'s versions, atomically and durably (0600)."""
    write_atomic(ring.path, _text(ring.keys))


def bind(tx: Tx, ring: Keyring) -> None:
    """Record the current version's id on a store's first use; refuse a key file holding
    no version the store knows (another store's key)."""
    tx.execute("INSERT INTO hq_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
               [KEY_ID_META, ring.current_id])  # openers racing on a new store: the first wins
    known = stored_id(tx)
    if known not in {key_id(k) for k in ring.keys.values()}:
        raise PIIKeyError(f"{ring.path}: this is not the PII key of this HQ store (its data "
                          "was encrypted under another key file)")


def stored_id(tx: Tx) -> str | None:
    """The fingerprint of the version the store encrypts under (a reader's lock on
    PostgreSQL: a rotation's switch waits for writers that still use the old one)."""
    lock = " FOR SHARE" if tx.dialect == "postgresql" else ""
    row = tx.execute(f"SELECT value FROM hq_meta WHERE key = ?{lock}", [KEY_ID_META]).fetchone()
    return str(row[0]) if row else None


def switch(tx: Tx, ring: Keyring) -> None:
    """Tell the store that `ring`'s current version now encrypts (caller's transaction)."""
    tx.execute("UPDATE hq_meta SET value = ? WHERE key = ?", [ring.current_id, KEY_ID_META])


def fresh(tx: Tx, ring: Keyring) -> Keyring:
    """`ring`, or the file reloaded when the store has switched to a version `ring` lacks."""
    if stored_id(tx) in (None, ring.current_id):
        return ring
    reloaded = load(ring.path, create=False)
    bind(tx, reloaded)
    return reloaded
