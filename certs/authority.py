"""HQ's key directory: the device CA, HQ's own keys, the broker's certificate, the CRL.

Layout of the directory (every private key 0600, the directory 0700; never
commit it): ca.key ca.pem · hq-sign.key hq-sign.pem (signs envelopes and
enrollment bundles) · hq-hpke.key hq-hpke.pub (nodes seal upstream to it) ·
hq.key hq.pem (HQ's MQTT client, CN=hq) · broker.key broker.pem (TLS server)
· broker-admin.key broker-admin.pem (made by `edge-hq broker-config`: changes the
broker's access control live) · crl.pem revoked.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from certs import pki
from certs.files import write_atomic
from certs.layout import CA_CERT, CRL

CA_FILES = ("ca.key", CA_CERT)


class AuthorityError(RuntimeError):
    """The CA directory is missing, incomplete or would be overwritten."""


@dataclass(frozen=True)
class Authority:
    """An opened CA directory."""

    directory: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    @property
    def crl_path(self) -> Path:
        """Where the CRL is kept (the broker's crlfile points here or at a copy)."""
        return self.directory / CRL

    def revoked(self) -> list[int]:
        """Serials revoked so far."""
        path = self.directory / "revoked.json"
        return json.loads(path.read_text()) if path.exists() else []

    def write_crl(self, revoked: list[int]) -> None:
        """Record the revoked serials and publish a fresh CRL."""
        serials = json.dumps(sorted(set(revoked))).encode()
        write_atomic(self.directory / "revoked.json", serials)
        crl = pki.build_crl(self.ca_key, self.ca_cert, revoked)
        _write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def issue(self, csr: x509.CertificateSigningRequest, *, server_names: list[str] | None = None,
              days: int = pki.NODE_DAYS, signing_only: bool = False) -> x509.Certificate:
        """Sign a CSR with the device CA."""
        return pki.issue(self.ca_key, self.ca_cert, csr, server_names=server_names, days=days,
                         signing_only=signing_only)

    def sign_key(self) -> ec.EllipticCurvePrivateKey:
        """HQ's signing key."""
        key = serialization.load_pem_private_key((self.directory / "hq-sign.key").read_bytes(),
                                                 None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def sign_cert(self) -> x509.Certificate:
        """HQ's signing certificate."""
        return x509.load_pem_x509_certificate((self.directory / "hq-sign.pem").read_bytes())

    def hpke_public_pem(self) -> str:
        """HQ's HPKE public key (PEM)."""
        return (self.directory / "hq-hpke.pub").read_text()


def _write_public(path: Path, data: bytes) -> None:
    """Write a certificate or CRL atomically and durably, world-readable (the broker reads it)."""
    write_atomic(path, data, mode=0o644)


def _issue_pair(auth: Authority, name: str, common_name: str,
                server_names: list[str] | None = None, signing_only: bool = False) -> None:
    """A key and certificate for one of HQ's own identities, with only the use it needs."""
    key = pki.new_key()
    cert = auth.issue(pki.make_csr(key, common_name, "Khidmat Edge HQ"),
                      server_names=server_names, days=pki.CA_DAYS // 3,
                      signing_only=signing_only)
    write_atomic(auth.directory / f"{name}.key", pki.key_pem(key))
    _write_public(auth.directory / f"{name}.pem", pki.cert_pem(cert))


def init_authority(directory: Path, broker_names: list[str]) -> Authority:
    """Create every HQ key; refuse to overwrite an existing CA."""
    if (directory / "ca.key").exists():
        raise AuthorityError(f"{directory}: a CA exists already; nothing changed")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key, ca_cert = pki.create_ca()
    write_atomic(directory / "ca.key", pki.key_pem(ca_key))
    _write_public(directory / CA_CERT, pki.cert_pem(ca_cert))
    auth = Authority(directory, ca_key, ca_cert)
    _issue_pair(auth, "hq-sign", "hq-sign", signing_only=True)
    _issue_pair(auth, "hq", "hq")
    _issue_pair(auth, "broker", broker_names[0], server_names=broker_names)
    hpke = x25519.X25519PrivateKey.generate()
    write_atomic(directory / "hq-hpke.key", hpke.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    _write_public(directory / "hq-hpke.pub", hpke.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    auth.write_crl([])
    return auth


def ensure_broker_admin(auth: Authority) -> bool:
    """Issue the `broker-admin` client certificate unless it exists; True if issued now.

    The broker's access control lets this identity use the dynamic-security control
    topic and nothing else: `node sign` and `node revoke` change the running broker with
    it. HQ's ingest workers (`hq`) do not get that power.
    """
    if (auth.directory / "broker-admin.pem").exists():
        return False
    _issue_pair(auth, "broker-admin", "broker-admin")
    return True


def open_authority(directory: Path) -> Authority:
    """Load an existing CA directory, checking the key file mode."""
    key_path = directory / "ca.key"
    if not key_path.exists():
        raise AuthorityError(f"{directory}: no CA here; run `edge-hq ca init` first")
    if key_path.stat().st_mode & 0o077:
        raise AuthorityError(f"{key_path}: readable by others; fix with: chmod 600 {key_path}")
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AuthorityError(f"{key_path}: not an EC key")
    cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    return Authority(directory, key, cert)
