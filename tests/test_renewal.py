"""Certificates renew over the sync link before they expire: no site visit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from certs import files, pki
from edge_node import __version__
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox
from hq.store import HQDatabase
from hq.worker import Worker
from sync import agent as agent_module
from sync.agent import Agent
from sync.identity import load_cert
from tests.helpers import wait_for
from tests.sync_env import SyncEnv
from tests.test_sync_e2e import issue_tickets
from tests.tls_broker import TLSBroker

pytestmark = pytest.mark.broker  # every test here starts a TLS Mosquitto


def test_certificate_renews_at_two_thirds_of_life(tmp_path: Path, node: Node, hq_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An aging certificate is replaced through HQ; syncing carries on with the new one."""
    monkeypatch.setattr(agent_module, "STATUS_EVERY_S", 0.5)
    broker = TLSBroker(tmp_path / "broker")
    env = SyncEnv(tmp_path, broker, hq_url)
    files.write_atomic(env.hq_dir / "ca.key", pki.key_pem(broker.ca_key))
    sync_dir = Path(node.settings["data_dir"]) / "sync"
    identity = env.enroll(node.node_id, sync_dir)
    aging = pki.issue(broker.ca_key, broker.ca_cert,
                      pki.make_csr(identity.key, node.node_id, "ISB-01"), days=3,
                      not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=12))
    (sync_dir / "node.pem").write_bytes(pki.cert_pem(aging))
    hq = HQDatabase(hq_url)
    hq.execute("UPDATE hq_nodes SET cert_pem = ? WHERE node_id = ?",
               [pki.cert_pem(aging).decode(), node.node_id])
    broker.start()
    worker = Worker(hq_url, env.hq, "localhost", broker.hq_port)
    worker.start()
    sync_agent = Agent(NodeOutbox(node), identity, __version__)
    assert sync_agent.renewal_due()
    sync_agent.start()
    try:
        wait_for(lambda: load_cert(sync_dir / "node.pem").serial_number != aging.serial_number,
                 30, "the renewed certificate")
        renewed = load_cert(sync_dir / "node.pem")
        assert renewed.not_valid_after_utc > aging.not_valid_after_utc
        assert not sync_agent.renewal_due()
        stored = hq.execute("SELECT cert_pem FROM hq_nodes WHERE node_id = ?",
                            [node.node_id]).fetchone()[0]
        assert stored == pki.cert_pem(renewed).decode()
        issue_tickets(node, 5)
        wait_for(lambda: NodeOutbox(node).stats()["count"] == 0, 30,
                 "sync over the renewed certificate")
    finally:
        sync_agent.stop()
        worker.stop()
        hq.close()
        broker.stop()
