"""Certificate renewal over the link: when a node's certificate is due, and the signed,
encrypted CSR (same key, no site visit) the agent sends HQ."""

from __future__ import annotations

import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.pki import make_csr
from sync import envelope
from sync.identity import NodeIdentity


def due(cert: x509.Certificate, life_fraction: float) -> bool:
    """True once `cert` has lived `life_fraction` of its validity."""
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return time.time() >= start + (end - start) * life_fraction


def seal_request(identity: NodeIdentity) -> bytes:
    """The renewal envelope: a CSR for the node's key, keeping its organisation (center)."""
    cert = identity.certificate()
    org = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    csr = make_csr(identity.key, identity.node_id, str(org[0].value) if org else None)
    return envelope.seal({"kind": "renew", "node": identity.node_id},
                         {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
                         identity.key, identity.hq_hpke_public)
