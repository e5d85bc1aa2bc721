"""Field-level protection of personal data: AES-256-GCM encryption and a keyed blind index.

A stored field is `v1:` + base64(nonce || ciphertext+tag). The table and
column name are bound as associated data, so a ciphertext copied into another
column (say a phone into the CNIC column) fails to decrypt instead of being
shown as the wrong thing. Exact-match lookups (CNIC) go through an HMAC of
the normalised value: equal inputs give equal index values, and without the
index key the index reveals nothing.

The CNIC index is the fleet's (sync/pii.py: same CNIC, same index at every
node and at HQ) once HQ has sent the node a fleet key, and the node's own
index key before that. Lookups try every key the node holds, so a citizen not
yet re-indexed is still found.

Records leave the node through `clear_for_envelope`, which the outbox port
applies only to what goes into a sealed envelope: the outbox on disk keeps
the ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node.store.keyfile import NodeKeys
from sync.pii import PII_FIELDS, fleet_index, wrap_clear

PREFIX = "v1:"
NONCE_BYTES = 12  # 96-bit random nonce, the size GCM is designed for


class PIIError(RuntimeError):
    """A stored field cannot be decrypted (wrong key, wrong column, or tampered)."""


def _aad(table: str, column: str) -> bytes:
    """Associated data binding a ciphertext to its column."""
    return f"{table}.{column}".encode()


def encrypt(keys: NodeKeys, table: str, column: str, plaintext: str) -> str:
    """Encrypt one field value for storage in `table.column`."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(keys.pii_key).encrypt(nonce, plaintext.encode(), _aad(table, column))
    return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt(keys: NodeKeys, table: str, column: str, stored: str) -> str:
    """Inverse of `encrypt`; PIIError (with no field content) when it does not verify."""
    if not stored.startswith(PREFIX):
        raise PIIError(f"{table}.{column}: unknown field encryption version")
    try:
        raw = base64.b64decode(stored[len(PREFIX):], validate=True)
        nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        plain = AESGCM(keys.pii_key).decrypt(nonce, sealed, _aad(table, column))
    except (ValueError, InvalidTag) as exc:
        raise PIIError(f"{table}.{column}: field does not decrypt with this node's key") from exc
    return plain.decode()


def encrypt_optional(keys: NodeKeys, table: str, column: str, plaintext: str | None) -> str | None:
    """`encrypt`, passing None through."""
    return None if plaintext is None else encrypt(keys, table, column, plaintext)


def decrypt_optional(keys: NodeKeys, table: str, column: str, stored: str | None) -> str | None:
    """`decrypt`, passing None through."""
    return None if stored is None else decrypt(keys, table, column, stored)


def blind_index(keys: NodeKeys, normalised: str) -> str:
    """HMAC-SHA256 of a normalised value under the index key, as hex."""
    return hmac.new(keys.index_key, normalised.encode(), hashlib.sha256).hexdigest()


def cnic_index(keys: NodeKeys, normalised: str) -> str:
    """The index a CNIC is stored under now: the newest fleet key's, else the node's own."""
    current = keys.fleet_current
    return blind_index(keys, normalised) if current is None else \
        fleet_index(current[0], current[1], normalised)


def cnic_index_candidates(keys: NodeKeys, normalised: str) -> list[str]:
    """Every index the CNIC may be stored under at this node (lookups, duplicate checks)."""
    return [*(fleet_index(v, k, normalised) for v, k in keys.fleet),
            blind_index(keys, normalised)]


def clear_for_envelope(keys: NodeKeys, table: str,
                       data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A captured row with its PII fields decrypted into the wire form (sync/pii.py).

    Only for a record about to be sealed to HQ; never written anywhere.
    """
    columns = PII_FIELDS.get(table)
    if not columns or data is None:
        return data
    out = dict(data)
    for column in columns:
        if column in out:
            out[column] = wrap_clear(decrypt_optional(keys, table, column, out[column]))
    return out
