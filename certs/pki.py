"""Certificate authority primitives with `cryptography`: keys, CSRs, certificates, CRLs.

Node identity is the certificate's common name (the node id); the broker uses
it as the MQTT username (`use_identity_as_username`) and HQ checks it against
the node id in each envelope header and topic.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
NODE_DAYS = 730  # must outlast the longest offline period; renew at 2/3 of life
CRL_DAYS = 30
# RFC 9336 id-kp-documentSigning: HQ's signing certificate signs bundles and envelopes and
# must not pass as a TLS client (OpenSSL refuses a client whose EKU lacks clientAuth).
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (TLS client/server and envelope signing)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (protected by file mode and, in service, by systemd)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, org: str | None = None) -> x509.Name:
    """A subject/issuer name."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    """Current UTC time."""
    return dt.datetime.now(dt.UTC)


def create_ca(common_name: str = "Khidmat Edge Device CA",
              days: int = CA_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA dedicated to the fleet's devices."""
    key = new_key()
    name = _name(common_name, "Khidmat Edge HQ")
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str,
             org: str | None = None) -> x509.CertificateSigningRequest:
    """A CSR for `common_name` (a node id, or `hq`, or a broker host name)."""
    return (x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, org))
            .sign(key, hashes.SHA256()))


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
          csr: x509.CertificateSigningRequest, *, server_names: list[str] | None = None,
          days: int = NODE_DAYS, not_before: dt.datetime | None = None,
          signing_only: bool = False) -> x509.Certificate:
    """Sign a CSR: a TLS client certificate, a server one when `server_names` is given, or,
    with `signing_only`, one that signs documents and can open no TLS session."""
    if not csr.is_signature_valid:
        raise ValueError("CSR signature is invalid")
    start = not_before or _now() - dt.timedelta(minutes=5)
    usage = (DOCUMENT_SIGNING if signing_only else ExtendedKeyUsageOID.SERVER_AUTH
             if server_names else ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
        .public_key(csr.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in server_names]),
            critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def common_name(cert: x509.Certificate) -> str:
    """The certificate's CN (node identity)."""
    return common_name_of(cert.subject)


def common_name_of(name: x509.Name) -> str:
    """The CN of a subject name."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def build_crl(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
              revoked_serials: list[int], days: int = CRL_DAYS) -> x509.CertificateRevocationList:
    """A CRL listing `revoked_serials`; nextUpdate `days` ahead (an expired CRL locks all out)."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(_now()).next_update(_now() + dt.timedelta(days=days)))
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(_now()).build())
    return builder.sign(ca_key, hashes.SHA256())


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Raise ValueError unless `cert` was signed by `ca_cert` and is valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception) as exc:
        raise ValueError("certificate was not issued by this CA") from exc
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError("certificate is expired or not yet valid")
