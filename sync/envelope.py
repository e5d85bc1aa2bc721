"""Envelopes: the unit that crosses MQTT or a USB bundle.

Wire layout (all lengths big-endian uint32):

    b"KEV" | version(1) | len(header) | header JSON | len(sig) | signature | body

The header (node id, kind, seq range, HLC, key ids) travels in clear so a
receiver can route and reject cheaply, but it is bound to the body twice:
the body is HPKE-sealed (RFC 9180, X25519/HKDF-SHA256/AES-256-GCM) to the
recipient with the header as `info`, and the signature (ECDSA P-256/SHA-256 by
the sender's certificate key) covers header and body together. The body is
zstd-compressed JSON before sealing. Size limits are checked before any
expensive work, and decompression stops at a hard ceiling (zip bombs).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any, TypeGuard

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

MAGIC = b"KEV"
VERSION = 1
KINDS = ("batch", "ack", "down", "status", "renew", "resume", "lookup")
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 32 * 1024 * 1024  # decompressed
ZSTD_LEVEL = 6
MAX_SEQ = 2**63 - 1  # seqs are stored as 64-bit signed integers (SQLite INTEGER, BIGINT)
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
_INFO_PREFIX = b"khidmat/v1/envelope|"


class EnvelopeError(ValueError):
    """An envelope failed a check; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        """Keep the code for quarantine records and a human sentence."""
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    """A parsed but not yet verified or opened envelope."""

    header: dict[str, Any]
    header_bytes: bytes
    signature: bytes
    body: bytes

    @property
    def signed_bytes(self) -> bytes:
        """What the signature covers."""
        return self.header_bytes + self.body


def canonical(data: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, UTF-8)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _compress(payload: Any) -> bytes:
    """zstd of the canonical JSON of `payload`."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(canonical(payload))


def _decompress(data: bytes) -> Any:
    """Inverse of `_compress`, refusing output beyond MAX_BODY_BYTES."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
        raw = reader.read(MAX_BODY_BYTES + 1)
    except zstandard.ZstdError as exc:
        raise EnvelopeError("bad_compression", "body is not valid zstd") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise EnvelopeError("too_large", f"body expands beyond {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise EnvelopeError("bad_body", "body is not JSON") from exc
    except RecursionError as exc:  # `[[[[…` deeper than the interpreter's stack
        raise EnvelopeError("bad_body", "body nests too deeply") from exc


def valid_seq(value: Any, lowest: int = 1) -> TypeGuard[int]:
    """An int (not a bool) between `lowest` and MAX_SEQ: the only seqs anyone may store."""
    return isinstance(value, int) and not isinstance(value, bool) and \
        lowest <= value <= MAX_SEQ


def seal(header: dict[str, Any], payload: Any, signer: ec.EllipticCurvePrivateKey,
         recipient: x25519.X25519PublicKey | None) -> bytes:
    """Build an envelope; `recipient=None` means signed but not encrypted (public data)."""
    if header.get("kind") not in KINDS:
        raise ValueError(f"unknown envelope kind {header.get('kind')!r}")
    header = {**header, "v": VERSION, "enc": recipient is not None}
    header_bytes = canonical(header)
    body = _compress(payload)
    if recipient is not None:
        body = _SUITE.encrypt(body, recipient, info=_INFO_PREFIX + header_bytes)
    signature = signer.sign(header_bytes + body, ec.ECDSA(hashes.SHA256()))
    return b"".join([MAGIC, bytes([VERSION]), struct.pack(">I", len(header_bytes)),
                     header_bytes, struct.pack(">I", len(signature)), signature, body])


def parse(data: bytes) -> Envelope:
    """Split an envelope into its parts, checking framing, version and sizes only."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("too_large", f"envelope of {len(data)} bytes exceeds the limit")
    if len(data) < 12 or data[:3] != MAGIC:
        raise EnvelopeError("garbage", "not a Khidmat envelope")
    if data[3] != VERSION:
        raise EnvelopeError("bad_version", f"unsupported envelope version {data[3]}")
    header_bytes, rest = _take(data[4:], MAX_HEADER_BYTES, "header")
    signature, body = _take(rest, 256, "signature")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError("garbage", "header is not JSON") from exc
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise EnvelopeError("bad_version", "header version missing or unsupported")
    if header.get("kind") not in KINDS:
        raise EnvelopeError("garbage", "unknown envelope kind")
    return Envelope(header, header_bytes, signature, body)


def _take(data: bytes, limit: int, what: str) -> tuple[bytes, bytes]:
    """Read one length-prefixed field."""
    if len(data) < 4:
        raise EnvelopeError("garbage", f"truncated {what}")
    (size,) = struct.unpack(">I", data[:4])
    if size > limit or size > len(data) - 4:
        raise EnvelopeError("garbage", f"{what} length out of range")
    return data[4:4 + size], data[4 + size:]


def verify(envelope: Envelope, public_key: ec.EllipticCurvePublicKey) -> None:
    """Check the signature with the sender's certificate key."""
    try:
        public_key.verify(envelope.signature, envelope.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise EnvelopeError("bad_signature", "signature does not match the sender's key") from exc


def open_body(envelope: Envelope, private_key: x25519.X25519PrivateKey | None) -> Any:
    """Decrypt (when encrypted) and decompress the body; call only after `verify`."""
    body = envelope.body
    if envelope.header.get("enc"):
        if private_key is None:
            raise EnvelopeError("bad_key", "encrypted envelope but no private key")
        try:
            body = _SUITE.decrypt(body, private_key, info=_INFO_PREFIX + envelope.header_bytes)
        except Exception as exc:  # cryptography raises InvalidTag; any failure is the same
            raise EnvelopeError("bad_encryption", "body cannot be decrypted") from exc
    return _decompress(body)
