"""Personal data at HQ: stored under HQ's own field key, read only through an audited path.

Nodes send PII fields in clear inside the sealed envelope (sync/pii.py). On
apply (`protect`, hq/ingest.py) each one is encrypted under HQ's field key —
AES-256-GCM, `h<version>:` + base64(nonce || ciphertext+tag), the table and
column bound as associated data as on the node — before it reaches the merge
state, the projections or the disk. The key lives outside the database: for
SQLite in `<db>.pii.key` beside the store (made with it, 0600), for PostgreSQL
in the file `--pii-key` / EDGE_HQ_PII_KEY names; the file holds the key's
versions (hq/pii_keys.py) and `edge-hq pii-key rotate` moves every value to a
new one (hq/pii_rotate.py). `hq_meta` keeps the current version's id, so a
store opened with another key file is refused instead of mixing keys.

The projection `hq_citizens.cnic_index` is HQ's own: the fleet index of the
decrypted CNIC under the current fleet key (hq/fleet_keys.py), so the same
person has the same index whatever node registered them. Reading a citizen in
clear (`read_citizen`, `edge-hq citizen show`) writes an `hq_pii_reads` row:
who, when, which citizen, why.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hq import pii_keys
from hq.dbapi import Tx
from hq.pii_keys import Keyring
from hq.pii_keys import PIIKeyError as PIIKeyError  # callers catch it from here
from sync.merge import State
from sync.pii import BLIND_INDEXED, CLEAR, PII_FIELDS, fleet_index

PREFIX = "h1:"  # the first version's; a value under version N starts `hN:`
HELD = re.compile(r"^h([1-9][0-9]{0,8}):")
NONCE_BYTES = 12
ENV_KEY_FILE = "EDGE_HQ_PII_KEY"


def default_key_file(dialect: str, db_path: Path | None) -> Path | None:
    """Where the field key lives when not given: beside a SQLite store, else EDGE_HQ_PII_KEY."""
    if dialect == "sqlite" and db_path is not None:
        return db_path.with_name(db_path.name + ".pii.key")
    env = os.environ.get(ENV_KEY_FILE)
    return Path(env) if env else None


def field_key(tx: Tx) -> Keyring:
    """The store's field key versions (reloaded when a rotation has begun since they were
    read), or PIIKeyError when none was configured (PostgreSQL)."""
    ring: Keyring | None = getattr(tx, "pii_keys", None)
    if ring is None:
        raise PIIKeyError("HQ has no PII field key: give --pii-key FILE (EDGE_HQ_PII_KEY) "
                          "for a PostgreSQL store")
    current = pii_keys.fresh(tx, ring)
    if current is not ring:
        tx.pii_keys = current
    return current


def version_of(stored: Any) -> int | None:
    """The key version of a value HQ encrypted (`h<version>:`), or None for anything else."""
    found = HELD.match(stored) if isinstance(stored, str) else None
    return int(found.group(1)) if found else None


def _aad(table: str, column: str) -> bytes:
    """Associated data: a ciphertext belongs to one column of one table."""
    return f"{table}.{column}".encode()


def encrypt(ring: Keyring, table: str, column: str, plaintext: str) -> str:
    """One field value under the current version of HQ's field key."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.current]).encrypt(nonce, plaintext.encode(),
                                                     _aad(table, column))
    return f"h{ring.current}:" + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt(ring: Keyring, table: str, column: str, stored: str) -> str:
    """Inverse of `encrypt` under the value's own version; PIIKeyError (no field content)
    when it is not HQ's, its version is not held (retired) or it does not verify."""
    version = version_of(stored)
    if version is None:
        raise PIIKeyError(f"{table}.{column}: not encrypted under HQ's field key")
    key = ring.keys.get(version)
    if key is None:
        raise PIIKeyError(f"{table}.{column}: encrypted under key version {version}, which "
                          f"{ring.path} does not hold")
    try:
        raw = base64.b64decode(stored.split(":", 1)[1], validate=True)
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(table, column))
    except (ValueError, InvalidTag) as exc:
        raise PIIKeyError(f"{table}.{column}: does not decrypt with HQ's field key") from exc
    return plain.decode()


def protect(tx: Tx, table: str, data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A record's data with each clear PII field (sync/pii.py) encrypted under HQ's key."""
    columns = PII_FIELDS.get(table)
    if not columns or data is None:
        return None if data is None else dict(data)
    key, out = field_key(tx), dict(data)
    for column in columns:
        value = out.get(column)
        if isinstance(value, dict):
            out[column] = encrypt(key, table, column, str(value[CLEAR]))
    return out


def upgrade_legacy(state: State, table: str, data: Mapping[str, Any] | None,
                   field_clocks: Mapping[str, str]) -> None:
    """Replace PII values HQ holds in a node's old form with the same write in HQ's form.

    Before HQ held its own key, a node's ciphertext was stored as sent; a
    record carrying the same write (same field clock) now in HQ's form takes
    its place, so no field stays unreadable at HQ once the node resends it.
    """
    for column in PII_FIELDS.get(table, ()):
        old = state.values.get(column)
        if data is None or not isinstance(old, str) or version_of(old) is not None:
            continue
        if column in data and state.clocks.get(column) == field_clocks.get(column):
            state.values[column] = data[column]


def current_fleet(tx: Tx) -> tuple[int, bytes] | None:
    """The newest fleet key (version, key) not retired, or None before the first."""
    row = tx.execute("SELECT version, key_enc FROM hq_fleet_keys WHERE key_enc IS NOT NULL "
                     "ORDER BY version DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return int(row[0]), bytes.fromhex(decrypt(field_key(tx), "hq_fleet_keys", "key", row[1]))


def project_row(tx: Tx, table: str, row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The row as projected: for citizens, `cnic_index` is HQ's fleet index of the CNIC."""
    source, target = BLIND_INDEXED.get(table, ("", ""))
    stored = row.get(source) if source else None
    if getattr(tx, "pii_keys", None) is None or not isinstance(stored, str) \
            or version_of(stored) is None:
        return row
    current = current_fleet(tx)
    if current is None:
        return row
    try:
        cnic = decrypt(field_key(tx), table, source, stored)
        return {**row, target: fleet_index(*current, cnic)}
    except (PIIKeyError, ValueError):  # not HQ's or not a CNIC: the node's index stays
        return row


def read_citizen(db: Tx, actor: str, purpose: str, *, citizen_id: str | None = None,
                 cnic: str | None = None, now: str) -> dict[str, Any]:
    """One citizen in clear, by id or by CNIC (fleet index), with an hq_pii_reads row.

    LookupError when no citizen matches; nothing is recorded then.
    """
    if not actor.strip() or not purpose.strip():
        raise ValueError("a read of citizen data needs the reader and the purpose")
    with db.transaction() as tx:
        row = _find(tx, citizen_id, cnic)
        if row is None:
            raise LookupError("no citizen at HQ matches")
        key = field_key(tx)
        out = {"id": row[0], "center_id": row[1], "node_id": row[2], "cnic_index": row[3],
               "cnic": decrypt(key, "citizens", "cnic_enc", row[4]),
               "name": decrypt(key, "citizens", "name_enc", row[5]),
               "phone": decrypt(key, "citizens", "phone_enc", row[6]) if row[6] else None}
        tx.execute("INSERT INTO hq_pii_reads (id, at, actor, citizen_id, purpose) "
                   "VALUES (?, ?, ?, ?, ?)", [uuid.uuid4().hex, now, actor.strip()[:100],
                                              row[0], purpose.strip()[:200]])
    return out


def read_names(db: Tx, actor: str, purpose: str, citizen_ids: list[str], now: str
               ) -> dict[str, str]:
    """Citizen id → name in clear for a screen's rows, in one transaction with one
    hq_pii_reads row per citizen read (ids HQ doesn't hold, or can't decrypt, are left out)."""
    if not actor.strip() or not purpose.strip():
        raise ValueError("a read of citizen data needs the reader and the purpose")
    ids = list(dict.fromkeys(citizen_ids))
    if not ids:
        return {}
    names: dict[str, str] = {}
    with db.transaction() as tx:
        key = field_key(tx)
        marks = ", ".join("?" for _ in ids)
        for citizen_id, name_enc in tx.execute(
                f"SELECT id, name_enc FROM hq_citizens WHERE id IN ({marks})", ids).fetchall():
            try:
                names[citizen_id] = decrypt(key, "citizens", "name_enc", name_enc)
            except PIIKeyError:
                continue
        if names:
            tx.executemany("INSERT INTO hq_pii_reads (id, at, actor, citizen_id, purpose) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [[uuid.uuid4().hex, now, actor.strip()[:100], citizen_id,
                             purpose.strip()[:200]] for citizen_id in names])
    return names


def _find(tx: Tx, citizen_id: str | None, cnic: str | None) -> Any:
    """The projected citizen row by id or by the CNIC's current fleet index."""
    cols = "id, center_id, node_id, cnic_index, cnic_enc, name_enc, phone_enc"
    if citizen_id is not None:
        return tx.execute(f"SELECT {cols} FROM hq_citizens WHERE id = ?",
                          [citizen_id]).fetchone()
    current = current_fleet(tx)
    if current is None:
        raise LookupError("HQ has no fleet key yet: run `edge-hq fleet-key rotate`")
    return tx.execute(f"SELECT {cols} FROM hq_citizens WHERE cnic_index = ? ORDER BY id "
                      "LIMIT 1", [fleet_index(*current, str(cnic))]).fetchone()


def reads(db: Tx, citizen_id: str | None = None) -> list[dict[str, Any]]:
    """The audit of HQ's citizen reads, newest first (optionally of one citizen)."""
    sql, params = "SELECT at, actor, citizen_id, purpose FROM hq_pii_reads", []
    if citizen_id is not None:
        sql, params = sql + " WHERE citizen_id = ?", [citizen_id]
    rows = db.execute(sql + " ORDER BY at DESC, id", params).fetchall()
    return [{"at": r[0], "actor": r[1], "citizen_id": r[2], "purpose": r[3]} for r in rows]
