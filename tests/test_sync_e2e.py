"""End to end over a real TLS Mosquitto: an offline day reaches HQ exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge_node import __version__
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox
from edge_node.store.schema import SYNCED_TABLES
from hq.worker import Worker
from sync.agent import Agent
from tests.helpers import wait_for
from tests.sync_env import SyncEnv, hq_rows

pytestmark = pytest.mark.broker  # every test here starts a TLS Mosquitto



def issue_tickets(node: Node, count: int) -> None:
    """Reception issues `count` tickets straight through the domain (no network)."""
    from edge_node.domain.visits import create_visit

    actor = {"id": "staff-1", "role": "receptionist"}
    for _ in range(count):
        node.write(lambda db: create_visit(db, services=["nadra_snic_renewal"],
                                           priority="normal", citizen_id=None,
                                           missing_documents=[], actor=actor,
                                           now=node.timestamp(), day=node.today()))


def node_rows(node: Node, table: str) -> dict[str, dict[str, Any]]:
    """The node's rows of one table, by id."""
    return {r["id"]: r for r in node.reader().query(f"SELECT * FROM {table}")}


def assert_hq_equals_node(node: Node, hq_url: str) -> None:
    """Every synced table at HQ holds exactly the node's rows."""
    for table in SYNCED_TABLES:
        mine, theirs = node_rows(node, table), hq_rows(hq_url, table)
        assert set(theirs) == set(mine), table
        for pk, row in mine.items():
            assert theirs[pk] == row, (table, pk)


def test_offline_day_then_link(env: SyncEnv, node: Node) -> None:
    """Thousands of actions with no broker; the broker appears; HQ gets each once."""
    issue_tickets(node, 600)  # ~3,600 outbox records with events and audit entries
    port = NodeOutbox(node)
    backlog = port.stats()["count"]
    assert backlog > 3000
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    agent = Agent(port, identity, __version__)
    agent.start()  # no broker yet: the node keeps working, the agent keeps trying
    issue_tickets(node, 5)
    time.sleep(1.0)
    assert agent.status()["link"] == "offline"
    env.broker.start()
    worker = Worker(env.hq_url, env.hq, "localhost", env.broker.hq_port)
    worker.start()
    try:
        wait_for(lambda: port.stats()["count"] == 0, 90, "backlog to reach zero")
        assert_hq_equals_node(node, env.hq_url)
        assert agent.status()["link"] == "online"
        hq_clock = node.reader().execute(
            "SELECT value FROM node_meta WHERE key = 'sync_hq_hlc'").fetchone()
        assert hq_clock and hq_clock[0].split(" ")[0].endswith("-hq")  # for the skew check
    finally:
        agent.stop()
        worker.stop()


def test_downstream_catalog_and_staff(env: SyncEnv, node: Node) -> None:
    """HQ's catalog and staff reach the node, applied once, and are acked."""
    from argon2 import PasswordHasher

    from edge_node.domain.catalog import load_seed
    from hq.downstream import enqueue
    from hq.store import HQDatabase

    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    env.broker.start()
    hq = HQDatabase(env.hq_url)
    catalog = load_seed()
    catalog["catalog_version"] += 1
    catalog["agencies"][0]["services"][0]["standard_minutes"] = 25
    enqueue(hq, "catalog", catalog)
    broken = {**load_seed(), "catalog_version": 99, "agencies": "not a list"}
    enqueue(hq, "catalog", broken)  # a bad catalog: refused, node keeps the last good one
    account = {"id": "hq-staff-1", "username": "amina", "full_name": "Amina Khan",
               "role": "supervisor", "password_hash": PasswordHasher().hash("a-long-password"),
               "active": 1, "language": "ur", "version": 1}
    enqueue(hq, "staff", {"accounts": [account]}, node.node_id)
    worker = Worker(env.hq_url, env.hq, "localhost", env.broker.hq_port)
    worker.start()
    agent = Agent(NodeOutbox(node), identity, __version__)
    agent.start()
    try:
        wait_for(lambda: NodeOutbox(node).down_seq() == 3, 30, "downstream applied")
        db = node.reader()
        minutes = db.execute("SELECT standard_minutes FROM services ORDER BY position "
                             "LIMIT 1").fetchone()[0]
        assert minutes == 25
        version = db.execute("SELECT value FROM node_meta WHERE key = 'catalog_version'")
        assert version.fetchone()[0] == str(catalog["catalog_version"])
        assert db.execute("SELECT role FROM staff WHERE username = 'amina'").fetchone()[0] \
            == "supervisor"
        wait_for(lambda: hq.execute("SELECT down_acked FROM hq_nodes").fetchone()[0] == 3,
                 30, "HQ to see the downstream ack")
    finally:
        agent.stop()
        worker.stop()
        hq.close()
