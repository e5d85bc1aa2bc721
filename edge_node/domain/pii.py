"""Field-level protection of personal data: AES-256-GCM encryption and a keyed blind index.

A stored field is `v1:` + base64(nonce || ciphertext+tag). The table and
column name are bound as associated data, so a ciphertext copied into another
column (say a phone into the CNIC column) fails to decrypt instead of being
shown as the wrong thing. Exact-match lookups (CNIC) go through an HMAC of
the normalised value: equal inputs give equal index values, and without the
index key the index reveals nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node.store.keyfile import NodeKeys

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
