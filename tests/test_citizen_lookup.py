"""One citizen across centers (issue 10 item 2), on SQLite and PostgreSQL.

Over a real TLS broker with an HQ worker and three in-process node agents: a
citizen registered at node A, looked up and edited at node B and looked up
from node C ends as one citizen at HQ, readable at HQ and at C; every lookup
is audited at HQ and a node's lookups are rate limited. Offline, two nodes
register the same person and HQ links the two registrations (USB bundles).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_node import __version__
from edge_node.bootstrap import init_node
from edge_node.config import load_settings
from edge_node.domain import citizens
from edge_node.errors import NotFoundError
from edge_node.node import Node
from edge_node.replication import lookup
from edge_node.replication.port import NodeOutbox
from hq import fleet_keys, lookups
from hq import pii as hq_pii
from hq.cli.main import main as hq_cli
from hq.ingest import Ingest
from hq.store import HQDatabase, utc_now
from hq.worker import Worker
from sync import batches
from sync.agent import Agent
from sync.identity import NodeIdentity
from sync.pii import fleet_index
from tests.helpers import wait_for
from tests.sync_env import SyncEnv
from tests.test_pii_fleet import exchange

CNIC, NAME, PHONE = "35202-1234567-1", "Ayesha Siddiqa Qureshi", "+923001234567"
UNKNOWN_CNIC = "61101-7654321-3"
SYNC_TIMEOUT_S = 60
CENTERS = {"A": "ISB-01", "B": "LHR-01", "C": "KHI-01"}


def reception(node: Node) -> dict[str, Any]:
    """The staff member at a node's desk (as the API's g.staff holds it)."""
    return {"id": f"reception-{node.center_id}", "role": "reception"}


@pytest.fixture
def live(env: SyncEnv) -> SyncEnv:
    """The set-up (tests/hq_fixtures.py: HQ keys, store on SQLite or PostgreSQL) with its
    TLS broker running; bundle tests use `env` alone (no broker)."""
    env.broker.start()
    return env


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    """Nodes A, B and C, each at its own center."""
    opened = {}
    for name, center in CENTERS.items():
        settings = load_settings(str(tmp_path / f"node-{name}"), environ={})
        init_node(settings, center)
        opened[name] = Node(settings)
    yield opened
    for node in opened.values():
        node.close()


def enroll(env: SyncEnv, node: Node) -> NodeIdentity:
    """Enroll a node at HQ (its sync directory in its data directory)."""
    return env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync", node.center_id)


def register(node: Node, name: str = NAME) -> dict[str, Any]:
    """Reception registers the person at this node."""
    return node.write(lambda db: citizens.register(
        db, node.keys, cnic=CNIC, name=name, phone=PHONE, id_kind="cnic",
        actor=reception(node), now=node.timestamp()))


def synced(node: Node) -> bool:
    """Every record of the node acknowledged by HQ."""
    return bool(NodeOutbox(node).stats()["count"] == 0)


def hq_people(url: str) -> list[tuple[str, str, str]]:
    """(citizen id, node, person id) of HQ's citizens, by node."""
    db = HQDatabase(url)
    try:
        return [tuple(r) for r in db.execute(
            "SELECT id, node_id, person_id FROM hq_citizens ORDER BY node_id").fetchall()]
    finally:
        db.close()


@pytest.mark.broker
def test_registered_at_a_edited_at_b_looked_up_from_c_is_one_citizen(
        live: SyncEnv, nodes: dict[str, Node], caplog: pytest.LogCaptureFixture) -> None:
    """A registers; B (online) looks the CNIC up at HQ, gets A's citizen and edits it;
    C looks it up and reads B's edit. HQ holds one citizen, readable, with no conflict;
    each lookup is audited (who, which node, when, found); an unknown CNIC is answered
    `not_found`; past the per-node limit HQ answers nothing and audits `rate_limited`."""
    caplog.set_level(logging.DEBUG)  # every log line of node, agent and HQ is scanned
    env = live
    a, b, c = nodes["A"], nodes["B"], nodes["C"]
    idents = {name: enroll(env, n) for name, n in nodes.items()}
    db = HQDatabase(env.hq_url)
    fleet_keys.distribute(db)  # every node gets the fleet key downstream
    db.close()
    worker = Worker(env.hq_url, env.hq, "localhost", env.broker.hq_port)
    worker.start()
    agents = {name: Agent(NodeOutbox(n), idents[name], __version__) for name, n in nodes.items()}
    for agent in agents.values():
        agent.start()
    try:
        for n in nodes.values():
            wait_for(lambda n=n: bool(n.keys.fleet),  # type: ignore[misc]
                     SYNC_TIMEOUT_S, f"fleet key at {n.node_id}")
        made = register(a)
        wait_for(lambda: synced(a) and hq_people(env.hq_url), SYNC_TIMEOUT_S,
                 "A's citizen at HQ")
        with pytest.raises(NotFoundError):
            citizens.lookup(b.reader(), b.keys, CNIC)

        outcome, found = lookup.ask_hq(b, agents["B"], CNIC, reception(b)["id"])
        assert outcome == "found" and found is not None
        assert (found["id"], found["name"], found["phone"]) == (made["id"], NAME, PHONE)
        b.write(lambda db: citizens.update(db, b.keys, made["id"], name="Ayesha S. Qureshi",
                                           phone=None, actor=reception(b),
                                           now=b.timestamp()))
        wait_for(lambda: synced(b), SYNC_TIMEOUT_S, "B's edit at HQ")

        outcome, seen = lookup.ask_hq(c, agents["C"], CNIC, reception(c)["id"])
        assert outcome == "found" and seen is not None
        assert (seen["id"], seen["name"]) == (made["id"], "Ayesha S. Qureshi")
        assert citizens.lookup(c.reader(), c.keys, CNIC)["name"] == "Ayesha S. Qureshi"
        wait_for(lambda: synced(c), SYNC_TIMEOUT_S, "C's copy acknowledged")

        missing = lookup.ask_hq(c, agents["C"], UNKNOWN_CNIC, reception(c)["id"])
        assert missing == ("not_found", None)

        db = HQDatabase(env.hq_url)
        try:
            assert hq_people(env.hq_url) == [(made["id"], a.node_id, made["id"])]
            assert db.execute("SELECT count(*) FROM hq_conflicts").fetchone()[0] == 0
            read = hq_pii.read_citizen(db, "analyst-7", "case 9", cnic=CNIC, now=utc_now())
            assert (read["id"], read["name"], read["phone"]) == \
                (made["id"], "Ayesha S. Qureshi", PHONE)
            audit = sorted(lookups.lookups(db), key=lambda r: r["at"])
            assert [(r["node_id"], r["actor"], r["outcome"], r["citizen_id"])
                    for r in audit] == [
                (b.node_id, reception(b)["id"], "found", made["id"]),
                (c.node_id, reception(c)["id"], "found", made["id"]),
                (c.node_id, reception(c)["id"], "not_found", None)]
            assert all(r["at"] for r in audit)
        finally:
            db.close()

        worker.ingest.lookup_limit = 3  # C asked 2 times this minute: one more is answered
        assert lookup.ask_hq(c, agents["C"], UNKNOWN_CNIC, "reception-x")[0] == "not_found"
        assert lookup.ask_hq(c, agents["C"], CNIC, "reception-x", wait_s=1.5) == \
            ("unavailable", None)
        db = HQDatabase(env.hq_url)
        try:
            outcomes = [r["outcome"] for r in lookups.lookups(db) if r["node_id"] == c.node_id]
        finally:
            db.close()
        assert sorted(outcomes) == ["found", "not_found", "not_found", "rate_limited"]
    finally:
        for agent in agents.values():
            agent.stop()
        worker.stop()

    listed = CliRunner().invoke(hq_cli, ["--db", env.hq_url, "citizen", "reads", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {(r["node_id"], r["actor"]) for r in rows} == {
        (None, "analyst-7"), (b.node_id, reception(b)["id"]), (c.node_id, reception(c)["id"]),
        (c.node_id, "reception-x")}
    logged = caplog.text  # node, agents, HQ worker and lookups: no personal value in any line
    for secret in (CNIC, CNIC.replace("-", ""), NAME, "Ayesha S. Qureshi", PHONE, "3001234567"):
        assert secret not in logged, secret
    assert caplog.records  # the capture saw the run's log (HQ ingest, the node's lookup)


def test_offline_registrations_of_one_person_are_linked_at_hq(
        env: SyncEnv, nodes: dict[str, Node], tmp_path: Path) -> None:
    """Two nodes register the same CNIC with no link; once their records reach HQ (USB
    bundles here) HQ holds both registrations as one person; a third person stays apart."""
    a, b = nodes["A"], nodes["B"]
    usb = tmp_path / "usb"
    usb.mkdir()
    idents = {n.node_id: enroll(env, n) for n in (a, b)}
    made = [register(a), register(b, "Ayesha S. Qureshi")]
    other = b.write(lambda db: citizens.register(
        db, b.keys, cnic=UNKNOWN_CNIC, name="Bilal Khan", phone=None, id_kind="cnic",
        actor=reception(b), now=b.timestamp()))
    db = HQDatabase(env.hq_url)
    fleet_keys.distribute(db)
    db.close()
    for n in (a, b):
        exchange(env, n, idents[n.node_id], usb)  # records up, the fleet key down
        exchange(env, n, idents[n.node_id], usb)  # the re-indexed rows up
    person = min(m["id"] for m in made)
    assert sorted(hq_people(env.hq_url)) == sorted(
        [(made[0]["id"], a.node_id, person), (made[1]["id"], b.node_id, person),
         (other["id"], b.node_id, other["id"])])
    db = HQDatabase(env.hq_url)
    try:
        with db.transaction() as tx:  # a rebuild links them the same way
            fleet_keys.reindex(tx)
    finally:
        db.close()
    assert sorted(hq_people(env.hq_url))[:3] == sorted(
        [(made[0]["id"], a.node_id, person), (made[1]["id"], b.node_id, person),
         (other["id"], b.node_id, other["id"])])


def test_lookup_requests_are_checked_audited_and_limited(
        env: SyncEnv, nodes: dict[str, Node], tmp_path: Path) -> None:
    """HQ answers a lookup on the node's downstream queue, sealed to that node (the queue
    on HQ's disk holds no personal value), audits each one, refuses a malformed one and
    stops answering a node past its limit, while another node is still answered."""
    a, b = nodes["A"], nodes["B"]
    usb = tmp_path / "usb"
    usb.mkdir()
    idents = {n.node_id: enroll(env, n) for n in (a, b)}
    made = register(a)
    db = HQDatabase(env.hq_url)
    version = fleet_keys.distribute(db)["version"]
    current = hq_pii.current_fleet(db)
    assert current is not None and current[0] == version
    key = current[1]
    db.close()
    exchange(env, a, idents[a.node_id], usb)
    exchange(env, a, idents[a.node_id], usb)
    index = fleet_index(version, key, CNIC)

    def ask(node: Node, request: str, body: dict[str, Any] | None = None) -> None:
        payload = batches.seal_request(idents[node.node_id], "lookup", body or {
            "request": request, "indexes": [index], "actor": "desk-1"})
        hq = HQDatabase(env.hq_url)
        try:
            Ingest(hq, env.hpke, lookup_limit=2).handle("t", payload, node.node_id)
        finally:
            hq.close()

    ask(b, "1" * 32)
    ask(b, "2" * 32)
    ask(b, "3" * 32)  # over the limit: audited, not answered
    ask(a, "4" * 32)
    ask(b, "5" * 32, {"request": "5" * 32, "indexes": [CNIC], "actor": "desk-1"})
    db = HQDatabase(env.hq_url)
    try:
        audit = {r["request"]: (r["node_id"], r["outcome"], r["citizen_id"])
                 for r in lookups.lookups(db)}
        assert audit == {"1" * 32: (b.node_id, "found", made["id"]),
                         "2" * 32: (b.node_id, "found", made["id"]),
                         "3" * 32: (b.node_id, "rate_limited", None),
                         "4" * 32: (a.node_id, "found", made["id"])}
        queued = db.execute("SELECT node_id, payload FROM hq_down WHERE kind = 'citizen' "
                            "ORDER BY node_id, seq").fetchall()
        assert [n for n, _ in queued] == sorted([a.node_id, b.node_id, b.node_id])
        for _, text in queued:
            assert CNIC not in text and NAME not in text and "3001234567" not in text
            assert json.loads(text)["found"] is True
        reason = db.execute("SELECT reason, detail FROM hq_quarantine").fetchone()
        assert reason[0] == "bad_body" and "fleet indexes" in reason[1]
    finally:
        db.close()
