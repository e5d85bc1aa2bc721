"""Personal data between node and HQ: which fields are PII, how they travel, the fleet index.

At rest a PII field is always ciphertext: on the node under the node's field
key, at HQ under HQ's. Only inside a sealed envelope (HPKE to HQ) does it
travel in clear, and then explicitly marked: the record field holds
`{"clear": "<value>"}` (or null), so HQ can tell a clear value from anything
else and refuses a PII field in any other form.

The fleet blind index is one HMAC key for the whole fleet, versioned: the
index of a CNIC is `f<version>:` + HMAC-SHA256(key, normalised CNIC) in hex,
computed the same way at every node and at HQ. The key reaches a node sealed
to its enrollment HPKE key (`seal_fleet_key`), in the enrollment bundle and as
the downstream kind `fleet_key`.

A citizen HQ sends a node (the answer to a reception lookup, downstream kind
`citizen`) is sealed the same way (`seal_to_node`): HQ's downstream queue on
disk holds ciphertext only, and only that node opens it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

PII_FIELDS: dict[str, tuple[str, ...]] = {
    "citizens": ("cnic_enc", "name_enc", "phone_enc"),
    "volunteers": ("phone_enc",),
}
"""The encrypted columns of each synced table (stored as ciphertext at both ends)."""
BLIND_INDEXED: dict[str, tuple[str, str]] = {"citizens": ("cnic_enc", "cnic_index")}
"""Tables found by a CNIC: (encrypted CNIC column, fleet blind-index column)."""
CLEAR = "clear"
FLEET_KEY_BYTES = 32
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
_CNIC_DIGITS = re.compile(r"[1-7][0-9]{11}[1-9]")


class SealedKeyError(ValueError):
    """A sealed fleet key is malformed, for another node, or does not open."""


def clear_problem(table: str, data: Any) -> str | None:
    """Why a record's PII fields are not in the clear wire form, or None (no PII, or fine)."""
    if not isinstance(data, dict):
        return None
    for column in PII_FIELDS.get(table, ()):
        if column not in data or data[column] is None:
            continue
        value = data[column]
        if not isinstance(value, dict) or set(value) != {CLEAR} or \
                not isinstance(value[CLEAR], str):
            return f"{table}.{column} must travel as {{\"clear\": text}} or null"
    return None


def wrap_clear(value: str | None) -> dict[str, str] | None:
    """A decrypted PII value in its wire form."""
    return None if value is None else {CLEAR: value}


def normalise_cnic(text: str) -> str:
    """`XXXXX-XXXXXXX-X` from a CNIC with or without dashes; ValueError otherwise."""
    digits = text.replace("-", "")
    if not _CNIC_DIGITS.fullmatch(digits):
        raise ValueError("not a CNIC")
    return f"{digits[:5]}-{digits[5:12]}-{digits[12]}"


def fleet_index(version: int, key: bytes, cnic: str) -> str:
    """The fleet blind index of a CNIC under fleet key `version`."""
    digest = hmac.new(key, normalise_cnic(cnic).encode(), hashlib.sha256).hexdigest()
    return f"f{version}:{digest}"


def index_version(index: str | None) -> int | None:
    """The fleet key version of an index value, or None for a node-local index."""
    if not index or not index.startswith("f") or ":" not in index:
        return None
    head = index[1:].split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _info(node_id: str, version: int) -> bytes:
    """HPKE `info`: binds a sealed key to its node and version."""
    return f"khidmat/v1/fleet-key|{node_id}|{version}".encode()


def seal_fleet_key(public_pem: str, node_id: str, version: int, key: bytes) -> dict[str, Any]:
    """The fleet key sealed to a node's enrollment HPKE key: `{"version", "sealed"}`."""
    public = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(public, x25519.X25519PublicKey):
        raise SealedKeyError("the node's HPKE key is not X25519")
    sealed = _SUITE.encrypt(key, public, info=_info(node_id, version))
    return {"version": version, "sealed": base64.b64encode(sealed).decode("ascii")}


def open_fleet_key(private: x25519.X25519PrivateKey, node_id: str,
                   payload: Any) -> tuple[int, bytes]:
    """(version, key) of a sealed fleet key for `node_id`; SealedKeyError otherwise."""
    if not isinstance(payload, dict):
        raise SealedKeyError("fleet key: not an object")
    version, sealed = payload.get("version"), payload.get("sealed")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1 \
            or not isinstance(sealed, str):
        raise SealedKeyError("fleet key: needs a positive version and a sealed key")
    try:
        key = _SUITE.decrypt(base64.b64decode(sealed, validate=True), private,
                             info=_info(node_id, version))
    except Exception as exc:  # InvalidTag, bad base64: all the same to the caller
        raise SealedKeyError("fleet key: does not open with this node's key") from exc
    if len(key) != FLEET_KEY_BYTES:
        raise SealedKeyError("fleet key: wrong length")
    return version, key


def _citizen_info(node_id: str, request_id: str) -> bytes:
    """HPKE `info` of a sealed citizen: binds it to its node and to the lookup it answers."""
    return f"khidmat/v1/citizen|{node_id}|{request_id}".encode()


def seal_to_node(public_pem: str, node_id: str, request_id: str, data: Any) -> str:
    """`data` (JSON) sealed to a node's enrollment HPKE key for one lookup, base64 text."""
    public = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(public, x25519.X25519PublicKey):
        raise SealedKeyError("the node's HPKE key is not X25519")
    text = json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
    sealed = _SUITE.encrypt(text, public, info=_citizen_info(node_id, request_id))
    return base64.b64encode(sealed).decode("ascii")


def open_at_node(private: x25519.X25519PrivateKey, node_id: str, request_id: str,
                 sealed: Any) -> Any:
    """Inverse of `seal_to_node`; SealedKeyError when it is not for this node and lookup."""
    if not isinstance(sealed, str):
        raise SealedKeyError("sealed data: not text")
    try:
        text = _SUITE.decrypt(base64.b64decode(sealed, validate=True), private,
                              info=_citizen_info(node_id, request_id))
        return json.loads(text)
    except Exception as exc:  # InvalidTag, bad base64 or JSON: all the same to the caller
        raise SealedKeyError("sealed data: does not open with this node's key") from exc
