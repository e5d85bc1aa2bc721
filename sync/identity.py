"""Key material of each end, as files in one directory (written by enrollment).

Node directory: node.key + node.pem (ECDSA P-256: TLS client and envelope
signing), node-hpke.key (X25519: opens downstream envelopes), ca.pem (the
device CA), hq-sign.pem (HQ's signing certificate), hq-hpke.pub (X25519:
upstream envelopes are sealed to it), broker.json ({"host", "port"}).
HQ directory: hq-sign.key + hq-sign.pem, hq-hpke.key, ca.pem, and the TLS
client pair hq.key + hq.pem (CN=hq) for the broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from certs.layout import CA_CERT, NODE_CERT, NODE_HPKE_KEY, NODE_KEY


class IdentityError(RuntimeError):
    """A key file is missing or unreadable."""


def load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key from PEM."""
    key = serialization.load_pem_private_key(_read(path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path}: not an EC private key")
    return key


def load_x25519_private(path: Path) -> x25519.X25519PrivateKey:
    """An X25519 private key from PEM."""
    key = serialization.load_pem_private_key(_read(path), password=None)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise IdentityError(f"{path}: not an X25519 private key")
    return key


def load_x25519_public(path: Path) -> x25519.X25519PublicKey:
    """An X25519 public key from PEM."""
    key = serialization.load_pem_public_key(_read(path))
    if not isinstance(key, x25519.X25519PublicKey):
        raise IdentityError(f"{path}: not an X25519 public key")
    return key


def x25519_private_pem(key: x25519.X25519PrivateKey) -> bytes:
    """PKCS#8 PEM of an X25519 private key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def x25519_public_pem(key: x25519.X25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of an X25519 public key."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_cert(path: Path) -> x509.Certificate:
    """A certificate from PEM."""
    return x509.load_pem_x509_certificate(_read(path))


def _read(path: Path) -> bytes:
    """File bytes, or IdentityError naming the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read ({exc.strerror}); is the node enrolled?") \
            from exc


@dataclass(frozen=True)
class NodeIdentity:
    """Everything a node needs to talk to HQ."""

    node_id: str
    directory: Path
    key: ec.EllipticCurvePrivateKey
    hpke_private: x25519.X25519PrivateKey
    hq_hpke_public: x25519.X25519PublicKey
    hq_sign_public: ec.EllipticCurvePublicKey
    broker_host: str
    broker_port: int

    @property
    def certfile(self) -> str:
        """Path of the node certificate."""
        return str(self.directory / NODE_CERT)

    def certificate(self) -> x509.Certificate:
        """The node certificate as it is on disk now (it is renewed in place)."""
        return load_cert(self.directory / NODE_CERT)

    @property
    def keyfile(self) -> str:
        """Path of the node key."""
        return str(self.directory / NODE_KEY)

    @property
    def cafile(self) -> str:
        """Path of the device CA."""
        return str(self.directory / CA_CERT)


def load_node_identity(directory: Path, node_id: str) -> NodeIdentity:
    """Read a node's sync directory."""
    hq_key = load_cert(directory / "hq-sign.pem").public_key()
    if not isinstance(hq_key, ec.EllipticCurvePublicKey):
        raise IdentityError("hq-sign.pem: not an EC certificate")
    try:
        broker = json.loads(_read(directory / "broker.json"))
        host, port = str(broker["host"]), int(broker["port"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError("broker.json: needs host and port") from exc
    return NodeIdentity(node_id, directory, load_ec_key(directory / NODE_KEY),
                        load_x25519_private(directory / NODE_HPKE_KEY),
                        load_x25519_public(directory / "hq-hpke.pub"), hq_key, host, port)


@dataclass(frozen=True)
class HQIdentity:
    """HQ's signing and decryption keys and its broker client pair."""

    directory: Path
    sign_key: ec.EllipticCurvePrivateKey
    hpke_private: x25519.X25519PrivateKey

    @property
    def certfile(self) -> str:
        """TLS client certificate (CN=hq)."""
        return str(self.directory / "hq.pem")

    @property
    def keyfile(self) -> str:
        """TLS client key."""
        return str(self.directory / "hq.key")

    @property
    def cafile(self) -> str:
        """Device CA."""
        return str(self.directory / CA_CERT)


def load_hq_identity(directory: Path) -> HQIdentity:
    """Read HQ's key directory."""
    return HQIdentity(directory, load_ec_key(directory / "hq-sign.key"),
                      load_x25519_private(directory / "hq-hpke.key"))
