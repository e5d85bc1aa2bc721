"""A whole sync set-up for tests: TLS Mosquitto, HQ keys and store, enrolled node identities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from certs import files, pki
from hq.ingest import register_node
from hq.store import HQDatabase
from sync.identity import (
    HQIdentity,
    NodeIdentity,
    load_hq_identity,
    load_node_identity,
    x25519_private_pem,
    x25519_public_pem,
)
from tests.tls_broker import TLSBroker


@dataclass
class SyncEnv:
    """Broker, HQ directory and store URL; `enroll` makes node identities."""

    root: Path
    broker: TLSBroker
    hq_url: str

    def __post_init__(self) -> None:
        """Create HQ's keys: signing pair, HPKE pair and the TLS client pair (CN=hq)."""
        self.hq_dir = self.root / "hq"
        self.hq_dir.mkdir(parents=True, exist_ok=True)
        (self.hq_dir / "ca.pem").write_bytes(pki.cert_pem(self.broker.ca_cert))
        sign = self.broker.identity("hq-sign")
        files.write_atomic(self.hq_dir / "hq-sign.key", pki.key_pem(sign.key))
        (self.hq_dir / "hq-sign.pem").write_bytes(pki.cert_pem(sign.cert))
        tls = self.broker.identity("hq")
        files.write_atomic(self.hq_dir / "hq.key", pki.key_pem(tls.key))
        (self.hq_dir / "hq.pem").write_bytes(pki.cert_pem(tls.cert))
        self.hpke = x25519.X25519PrivateKey.generate()
        files.write_atomic(self.hq_dir / "hq-hpke.key", x25519_private_pem(self.hpke))

    @property
    def hq(self) -> HQIdentity:
        """HQ's identity."""
        return load_hq_identity(self.hq_dir)

    def enroll(self, node_id: str, directory: Path, center_id: str = "ISB-01") -> NodeIdentity:
        """Write a node's sync directory and register the node at HQ."""
        directory.mkdir(parents=True, exist_ok=True)
        ident = self.broker.identity(node_id, center_id)
        files.write_atomic(directory / "node.key", pki.key_pem(ident.key))
        (directory / "node.pem").write_bytes(pki.cert_pem(ident.cert))
        node_hpke = x25519.X25519PrivateKey.generate()
        files.write_atomic(directory / "node-hpke.key", x25519_private_pem(node_hpke))
        (directory / "ca.pem").write_bytes(pki.cert_pem(self.broker.ca_cert))
        (directory / "hq-sign.pem").write_bytes((self.hq_dir / "hq-sign.pem").read_bytes())
        (directory / "hq-hpke.pub").write_bytes(x25519_public_pem(self.hpke.public_key()))
        (directory / "broker.json").write_text(
            json.dumps({"host": "localhost", "port": self.broker.port}))
        db = HQDatabase(self.hq_url)
        register_node(db, node_id, center_id, pki.cert_pem(ident.cert).decode(),
                      x25519_public_pem(node_hpke.public_key()).decode())
        db.close()
        return load_node_identity(directory, node_id)


def hq_rows(url: str, table: str) -> dict[str, dict[str, Any] | None]:
    """HQ's visible rows of one table, by primary key."""
    db = HQDatabase(url)
    try:
        rows = db.execute("SELECT pk, row_json FROM hq_records WHERE tbl = ?",
                          [table]).fetchall()
    finally:
        db.close()
    return {pk: json.loads(text) if text else None for pk, text in rows}
