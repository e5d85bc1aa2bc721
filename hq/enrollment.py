"""HQ's half of enrollment and revocation: sign a node's request, register it, revoke it.

The bundle carries the current fleet blind-index key sealed to the node's HPKE key
(hq/fleet_keys.py).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from certs import pki
from certs.authority import Authority
from certs.enroll import check_request, make_bundle
from hq.downstream import enqueue
from hq.fleet_keys import for_enrollment
from hq.ingest import register_node
from hq.store import HQDatabase


def sign_request(auth: Authority, db: HQDatabase, request: dict[str, Any], center_id: str,
                 broker_host: str, broker_port: int) -> dict[str, Any]:
    """Issue the node certificate, record the node at HQ and return the signed bundle."""
    csr = check_request(request, center_id)
    cert = auth.issue(csr)
    node_id, hpke_public = str(request["node_id"]), str(request["hpke_public"])
    register_node(db, node_id, center_id, pki.cert_pem(cert).decode(), hpke_public)
    fleet_key = db.retrying(lambda tx: for_enrollment(tx, node_id, hpke_public))
    return make_bundle(node_cert=cert, ca_cert=auth.ca_cert, hq_sign_cert=auth.sign_cert(),
                       hq_sign_key=auth.sign_key(), hq_hpke_public=auth.hpke_public_pem(),
                       broker_host=broker_host, broker_port=broker_port, center_id=center_id,
                       fleet_key=fleet_key)


def revoke(auth: Authority, db: HQDatabase, node_id: str) -> int:
    """Revoke a node: CRL updated, ingest refuses it, the fleet is told. Returns the serial."""
    row = db.execute("SELECT cert_pem FROM hq_nodes WHERE node_id = ?", [node_id]).fetchone()
    if row is None:
        raise ValueError(f"unknown node {node_id}")
    serial = x509.load_pem_x509_certificate(row[0].encode()).serial_number
    auth.write_crl([*auth.revoked(), serial])

    def run(tx: HQDatabase) -> None:
        tx.execute("UPDATE hq_nodes SET revoked = 1 WHERE node_id = ?", [node_id])

    db.retrying(run)
    enqueue(db, "revocation", {"node_id": node_id, "serial": str(serial)})
    return serial


def renew(auth: Authority, db: HQDatabase, node_id: str,
          csr: x509.CertificateSigningRequest) -> x509.Certificate:
    """Issue a fresh certificate for a node's existing key and send it down."""
    cert = auth.issue(csr)
    pem = pki.cert_pem(cert).decode()

    def run(tx: HQDatabase) -> None:
        tx.execute("UPDATE hq_nodes SET cert_pem = ? WHERE node_id = ?", [pem, node_id])

    db.retrying(run)
    enqueue(db, "certificate", {"cert": pem}, node_id)
    return cert
