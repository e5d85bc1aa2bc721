"""Enrollment by CSR: the node's key never leaves the node.

1. Node: `request` makes node.key and node-hpke.key in its sync directory and
   writes a request file (node id, center, CSR, HPKE public key).
2. HQ: `sign_request` checks the CSR, issues the certificate and returns an
   enrollment bundle (node cert, CA, HQ signing cert, HQ HPKE public key,
   broker address, the fleet index key sealed to the node's HPKE key), signed
   by HQ's signing key.
3. Node: `install` checks the bundle — CA fingerprint pinned by the
   technician, every certificate chains to that CA, the node certificate
   carries the node's own key, HQ's signature over the whole bundle — and only
   then writes the files the sync agent reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from certs import pki
from certs.broker import NODE_ID, RESERVED_IDS
from certs.files import write_atomic
from certs.layout import CA_CERT, NODE_CERT, NODE_HPKE_KEY, NODE_KEY

BUNDLE_VERSION = 1
REQUEST_VERSION = 1
MAX_FILE_BYTES = 256 * 1024


class EnrollError(ValueError):
    """A request or bundle is malformed, tampered with, or not for this node."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex (what `edge-hq ca init` prints)."""
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _canonical(data: dict[str, Any]) -> bytes:
    """Canonical JSON of everything but the signature."""
    body = {k: v for k, v in data.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A small JSON object from a file, or EnrollError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EnrollError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise EnrollError(f"{path}: {what} is too large")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnrollError(f"{path}: {what} is not JSON") from exc
    if not isinstance(data, dict):
        raise EnrollError(f"{path}: {what} is not a JSON object")
    return data


def x25519_public_pem(key: x25519.X25519PublicKey) -> str:
    """PEM of an X25519 public key."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def make_request(sync_dir: Path, node_id: str, center_id: str) -> dict[str, Any]:
    """Create the node's keys (once) and return the enrollment request."""
    key_path, hpke_path = sync_dir / NODE_KEY, sync_dir / NODE_HPKE_KEY
    if key_path.exists():
        key = _load_ec(key_path)
    else:
        key = pki.new_key()
        write_atomic(key_path, pki.key_pem(key))
    if hpke_path.exists():
        hpke = serialization.load_pem_private_key(hpke_path.read_bytes(), None)
        assert isinstance(hpke, x25519.X25519PrivateKey)
    else:
        hpke = x25519.X25519PrivateKey.generate()
        write_atomic(hpke_path, hpke.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    csr = pki.make_csr(key, node_id, center_id)
    return {"version": REQUEST_VERSION, "node_id": node_id, "center_id": center_id,
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
            "hpke_public": x25519_public_pem(hpke.public_key())}


def _load_ec(path: Path) -> ec.EllipticCurvePrivateKey:
    """An EC key file."""
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnrollError(f"{path}: not an EC key")
    return key


def check_node_id(node_id: str) -> None:
    """Refuse a node id that is not a plain topic level or that names one of HQ's identities.

    The id becomes the node's MQTT user, client id and topic level: `hq`, `hq-sign`,
    `broker` or `broker-admin` (in any case) would pose as HQ to the broker, and a
    wildcard or slash would reach other nodes' topics.
    """
    if not NODE_ID.fullmatch(node_id):
        raise EnrollError(f"node id {node_id!r} is not allowed: use letters, digits, - and _ "
                          "(at most 64)")
    if node_id.lower() in RESERVED_IDS:
        raise EnrollError(f"node id {node_id!r} is reserved for HQ "
                          f"({', '.join(sorted(RESERVED_IDS))}); nothing was signed")


def check_request(request: dict[str, Any], center_id: str) -> x509.CertificateSigningRequest:
    """The CSR of a valid request for `center_id`, or EnrollError."""
    try:
        csr = x509.load_pem_x509_csr(str(request["csr"]).encode())
        node_id, hpke = str(request["node_id"]), str(request["hpke_public"])
        serialization.load_pem_public_key(hpke.encode())
    except (KeyError, ValueError) as exc:
        raise EnrollError("request is malformed (csr, node_id, hpke_public)") from exc
    check_node_id(node_id)
    if not csr.is_signature_valid:
        raise EnrollError("request CSR signature is invalid")
    if pki.common_name_of(csr.subject) != node_id:
        raise EnrollError("CSR common name does not match the node id")
    if request.get("center_id") != center_id:
        raise EnrollError(f"request is for center {request.get('center_id')}, not {center_id}")
    return csr


def make_bundle(*, node_cert: x509.Certificate, ca_cert: x509.Certificate,
                hq_sign_cert: x509.Certificate, hq_sign_key: ec.EllipticCurvePrivateKey,
                hq_hpke_public: str, broker_host: str, broker_port: int,
                center_id: str, fleet_key: dict[str, Any] | None = None) -> dict[str, Any]:
    """The signed enrollment bundle; `fleet_key` is the fleet index key already sealed to
    the node's HPKE key (sync/pii.py), carried as it is."""
    bundle: dict[str, Any] = {
        "version": BUNDLE_VERSION, "node_id": pki.common_name(node_cert),
        "center_id": center_id, "node_cert": pki.cert_pem(node_cert).decode(),
        "ca_cert": pki.cert_pem(ca_cert).decode(),
        "hq_sign_cert": pki.cert_pem(hq_sign_cert).decode(), "hq_hpke_public": hq_hpke_public,
        "broker": {"host": broker_host, "port": broker_port},
    }
    if fleet_key is not None:
        bundle["fleet_key"] = fleet_key
    signature = hq_sign_key.sign(_canonical(bundle), ec.ECDSA(hashes.SHA256()))
    bundle["signature"] = base64.b64encode(signature).decode()
    return bundle


def verify_bundle(bundle: dict[str, Any], node_key: ec.EllipticCurvePrivateKey,
                  ca_fingerprint: str, node_id: str) -> dict[str, x509.Certificate]:
    """Check a bundle completely; return its certificates."""
    if bundle.get("version") != BUNDLE_VERSION:
        raise EnrollError("unsupported bundle version")
    try:
        certs = {name: x509.load_pem_x509_certificate(str(bundle[name]).encode())
                 for name in ("node_cert", "ca_cert", "hq_sign_cert")}
        signature = base64.b64decode(str(bundle["signature"]), validate=True)
    except (KeyError, ValueError) as exc:
        raise EnrollError("bundle is malformed") from exc
    if _norm(fingerprint(certs["ca_cert"])) != _norm(ca_fingerprint):
        raise EnrollError("bundle CA does not match the fingerprint given by HQ (wrong CA?)")
    for name in ("node_cert", "hq_sign_cert"):
        try:
            pki.verify_issued_by(certs[name], certs["ca_cert"])
        except ValueError as exc:
            raise EnrollError(f"{name}: {exc}") from exc
    _check_signature(bundle, certs["hq_sign_cert"], signature)
    if pki.common_name(certs["node_cert"]) != node_id or bundle.get("node_id") != node_id:
        raise EnrollError(f"bundle is for another node, not {node_id}")
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs["node_cert"].public_key().public_bytes(*raw) != \
            node_key.public_key().public_bytes(*raw):
        raise EnrollError("bundle certificate does not carry this node's key")
    return certs


def _norm(text: str) -> str:
    """Fingerprint without separators, upper case."""
    return text.replace(":", "").replace(" ", "").upper()


def _check_signature(bundle: dict[str, Any], cert: x509.Certificate, signature: bytes) -> None:
    """HQ's signature over the bundle."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise EnrollError("HQ signing certificate has no EC key")
    try:
        key.verify(signature, _canonical(bundle), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise EnrollError("bundle signature is invalid (tampered with?)") from exc


def install(sync_dir: Path, bundle: dict[str, Any], ca_fingerprint: str,
            node_id: str) -> x509.Certificate:
    """Verify and write the files the agent reads; returns the node certificate."""
    certs = verify_bundle(bundle, _load_ec(sync_dir / NODE_KEY), ca_fingerprint, node_id)
    broker = bundle.get("broker") or {}
    if not isinstance(broker.get("host"), str) or not isinstance(broker.get("port"), int):
        raise EnrollError("bundle broker address is malformed")
    serialization.load_pem_public_key(str(bundle["hq_hpke_public"]).encode())
    files = {NODE_CERT: pki.cert_pem(certs["node_cert"]),
             CA_CERT: pki.cert_pem(certs["ca_cert"]),
             "hq-sign.pem": pki.cert_pem(certs["hq_sign_cert"]),
             "hq-hpke.pub": str(bundle["hq_hpke_public"]).encode(),
             "broker.json": json.dumps(broker).encode()}
    for name, data in files.items():
        write_atomic(sync_dir / name, data)
    return certs["node_cert"]


def request_digest(request: dict[str, Any]) -> str:
    """Short digest a technician can read out to HQ over the phone."""
    return hashlib.sha256(_canonical(request)).hexdigest()[:16]
