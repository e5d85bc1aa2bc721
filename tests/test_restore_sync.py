"""After a restore from backup, sync resumes with no duplicates, no gaps and no reused seq.

The trap: records made after the backup reached HQ and were lost with the
disk, so the restored outbox counter is behind what HQ holds. New records
reusing those seqs would be dropped by HQ as duplicates. End to end over the
real TLS broker with an HQ worker and the node agent, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node import __version__
from edge_node.backup import create_backup
from edge_node.node import Node
from edge_node.restore import record_restore, restore_backup
from edge_node.store.schema import SYNCED_TABLES
from edge_node.sync_port import NodeOutbox, restore_point, set_restore_point
from sync.agent import Agent
from sync.hq.db import HQDatabase
from sync.hq.ingest import _advance, verify_chain
from sync.hq.resume import RESUME_MARGIN_SEQS, ResumeRequest, parse_request, reserve
from sync.hq.worker import Worker
from sync.identity import NodeIdentity
from tests.helpers import wait_for
from tests.sync_env import SyncEnv, hq_rows
from tests.test_sync_e2e import issue_tickets, node_rows
from tests.tls_broker import TLSBroker

SYNC_TIMEOUT_S = 60


@pytest.fixture
def env(tmp_path: Path, hq_url: str) -> Iterator[SyncEnv]:
    """A running TLS broker, HQ keys and an HQ store on SQLite or PostgreSQL."""
    broker = TLSBroker(tmp_path / "broker")
    broker.start()
    yield SyncEnv(tmp_path, broker, hq_url)
    broker.stop()


@pytest.fixture
def worker(env: SyncEnv) -> Iterator[Worker]:
    """One HQ ingest worker on the broker."""
    started = Worker(env.hq_url, env.hq, "localhost", env.broker.port)
    started.start()
    yield started
    started.stop()


def start_agent(node: Node, identity: NodeIdentity) -> Agent:
    """The node's sync agent, connected."""
    agent = Agent(NodeOutbox(node), identity, __version__)
    agent.start()
    return agent


def synced(node: Node) -> bool:
    """Backlog empty and no restore point pending."""
    return NodeOutbox(node).stats()["count"] == 0 and restore_point(node.reader()) is None


def hq_node(url: str, node_id: str) -> dict[str, Any]:
    """HQ's acked seq for a node and the seqs it saw above it (a gap keeps them there)."""
    db = HQDatabase(url)
    try:
        acked = db.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?",
                           [node_id]).fetchone()[0]
        above = db.execute("SELECT count(*) FROM hq_seen WHERE node_id = ?",
                           [node_id]).fetchone()[0]
        problems = verify_chain(db, node_id)
    finally:
        db.close()
    return {"acked": int(acked), "seen_above": int(above), "chain": problems}


def issued_seq(node: Node) -> int:
    """The node's outbox counter (highest seq ever issued)."""
    row = node.reader().execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'sync_outbox'").fetchone()
    return int(row[0])


def restore(settings: dict[str, Any], node: Node, path: Path) -> Node:
    """The disk dies (database gone, key file kept apart), `edge-node restore`, reopen."""
    keys = node.keys
    node.close()
    for lost in Path(settings["data_dir"]).glob("node.db*"):
        lost.unlink()
    restored = restore_backup(settings, keys, path)
    record_restore(settings, path, restored)
    return Node(settings)


def assert_node_rows_at_hq(node: Node, hq_url: str) -> None:
    """Every row the node has is at HQ with the same content."""
    for table in SYNCED_TABLES:
        theirs = hq_rows(hq_url, table)
        for pk, row in node_rows(node, table).items():
            assert theirs.get(pk) == row, (table, pk)


@pytest.mark.broker
def test_restore_after_synced_records_were_lost(env: SyncEnv, worker: Worker,
                                                settings: dict[str, Any]) -> None:
    """backup → more tickets → synced → disk lost, restore → more tickets → all at HQ once."""
    node = Node(settings)
    identity = env.enroll(node.node_id, Path(settings["data_dir"]) / "sync")
    agent = start_agent(node, identity)
    try:
        issue_tickets(node, 3)
        wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "first tickets at HQ")
        made = create_backup(settings, node.keys)
        issue_tickets(node, 4)
        wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "post-backup tickets at HQ")
    finally:
        agent.stop()
    before_loss = set(node_rows(node, "tickets"))
    assert set(hq_rows(env.hq_url, "tickets")) == before_loss
    before = hq_node(env.hq_url, node.node_id)
    assert before["acked"] == issued_seq(node) > made.manifest["outbox_seq"]

    node = restore(settings, node, made.path)
    try:
        kept = set(node_rows(node, "tickets"))
        assert len(kept) == 3
        issue_tickets(node, 5)  # offline, right after the restore
        held = [r[0] for r in node.reader().execute(
            "SELECT seq FROM sync_outbox WHERE seq > ?", [made.manifest["outbox_seq"]])]
        assert min(held) <= before["acked"]  # these seqs HQ has seen: they must move
        new = set(node_rows(node, "tickets")) - kept
        agent = start_agent(node, identity)
        try:
            wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "resume and sync after restore")
        finally:
            agent.stop()
        at_hq = set(hq_rows(env.hq_url, "tickets"))
        assert new <= at_hq  # a reused seq would have been dropped as a duplicate
        assert at_hq == before_loss | new  # the lost post-backup tickets stay HQ-only
        assert_node_rows_at_hq(node, env.hq_url)
        after = hq_node(env.hq_url, node.node_id)
        assert after["acked"] == issued_seq(node) >= before["acked"] + RESUME_MARGIN_SEQS
        assert after["seen_above"] == 0  # no gap holds HQ's ack back
        assert NodeOutbox(node).acked_seq() == after["acked"]
        assert any("fork" in p for p in after["chain"])  # the audit chain shows the restore
    finally:
        node.close()


@pytest.mark.broker
def test_restore_of_records_hq_never_received(env: SyncEnv, worker: Worker,
                                              settings: dict[str, Any]) -> None:
    """Backup of an unsynced node, disk lost before any sync: the backup's records and the
    new ones reach HQ; only what was made between backup and loss is gone."""
    node = Node(settings)
    identity = env.enroll(node.node_id, Path(settings["data_dir"]) / "sync")
    issue_tickets(node, 3)
    made = create_backup(settings, node.keys)
    issue_tickets(node, 2)  # never synced, lost with the disk
    node = restore(settings, node, made.path)
    try:
        issue_tickets(node, 2)
        agent = start_agent(node, identity)
        try:
            wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "restored and new records at HQ")
        finally:
            agent.stop()
        assert set(hq_rows(env.hq_url, "tickets")) == set(node_rows(node, "tickets"))
        assert len(node_rows(node, "tickets")) == 5
        assert_node_rows_at_hq(node, env.hq_url)
        after = hq_node(env.hq_url, node.node_id)
        assert after["acked"] == issued_seq(node) and after["seen_above"] == 0
    finally:
        node.close()


# -- the two halves, without a broker ------------------------------------------------------

@pytest.fixture
def hq_with_node(hq_db: HQDatabase) -> HQDatabase:
    """An HQ store that knows node NTEST."""
    with hq_db.transaction() as tx:
        tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, enrolled_at) "
                   "VALUES ('NTEST', 'ISB-01', 'x', 'now')")
    return hq_db


def hq_reserve(db: HQDatabase, restored_seq: int, restore_id: str) -> tuple[int, int]:
    """What the ingest does with a resume request: reserve, then advance the ack."""
    def run(tx: HQDatabase) -> tuple[int, int]:
        acked, resume_seq = reserve(tx, "NTEST", ResumeRequest(restored_seq, restore_id))
        acked = _advance(tx, "NTEST", acked)
        tx.execute("UPDATE hq_nodes SET acked_seq = ? WHERE node_id = 'NTEST'", [acked])
        return acked, resume_seq

    result: tuple[int, int] = db.retrying(run)
    return result


def test_hq_resume_skips_what_the_node_lost_and_answers_once(hq_with_node: HQDatabase) -> None:
    """HQ acked 10 and saw 14..15 (11..13 lost in transit). Restored at 8: the node resends
    9..10 (already acked), 11..15 and the margin are never coming; same answer on a retry."""
    db = hq_with_node
    with db.transaction() as tx:
        tx.execute("UPDATE hq_nodes SET acked_seq = 10 WHERE node_id = 'NTEST'")
        for seq in (14, 15):
            tx.execute("INSERT INTO hq_seen (node_id, seq) VALUES ('NTEST', ?)", [seq])
    acked, resume_seq = hq_reserve(db, 8, "a" * 32)
    assert resume_seq == 15 + RESUME_MARGIN_SEQS
    assert acked == resume_seq  # nothing between 10 and the resume point can arrive
    assert hq_reserve(db, 8, "a" * 32) == (acked, resume_seq)
    with db.transaction() as tx:  # the node's next record
        tx.execute("INSERT INTO hq_seen (node_id, seq) VALUES ('NTEST', ?)", [resume_seq + 1])
        assert _advance(tx, "NTEST", resume_seq) == resume_seq + 1


def test_hq_resume_waits_for_restored_records(hq_with_node: HQDatabase) -> None:
    """HQ acked 5, the backup holds up to 20: 6..20 must still come from the node."""
    with hq_with_node.transaction() as tx:
        tx.execute("UPDATE hq_nodes SET acked_seq = 5 WHERE node_id = 'NTEST'")
    acked, resume_seq = hq_reserve(hq_with_node, 20, "b" * 32)
    assert acked == 5
    assert resume_seq == 20 + RESUME_MARGIN_SEQS
    with hq_with_node.transaction() as tx:
        for seq in range(1, 21):
            tx.execute("INSERT INTO hq_seen (node_id, seq) VALUES ('NTEST', ?) "
                       "ON CONFLICT (node_id, seq) DO NOTHING", [seq])
        assert _advance(tx, "NTEST", acked) == resume_seq


@pytest.mark.parametrize("body", [None, [], {"restored_seq": -1, "restore_id": "a" * 32},
                                  {"restored_seq": True, "restore_id": "a" * 32},
                                  {"restored_seq": 3, "restore_id": "../x"}])
def test_bad_resume_requests_are_refused(body: Any) -> None:
    """Malformed requests never reach the store (the ingest quarantines them)."""
    with pytest.raises(ValueError):
        parse_request(body)


def test_node_renumbers_held_records_after_hq_answers(node: Node) -> None:
    """Records made after the restore point move above HQ's resume seq, order kept, and
    the counter follows, in one transaction."""
    issue_tickets(node, 1)
    base = issued_seq(node)
    node.write(lambda db: set_restore_point(db, base, "c" * 32))
    issue_tickets(node, 2)
    held = node.reader().execute("SELECT seq, hlc, tbl, pk FROM sync_outbox WHERE seq > ? "
                                 "ORDER BY seq", [base]).fetchall()
    port = NodeOutbox(node)
    with pytest.raises(ValueError):
        port.resume(0, base - 1)
    port.resume(base - 1, base + 500)
    moved = node.reader().execute("SELECT seq, hlc, tbl, pk FROM sync_outbox WHERE seq > ? "
                                  "ORDER BY seq", [base]).fetchall()
    assert [r[1:] for r in moved] == [r[1:] for r in held]
    assert [r[0] for r in moved] == list(range(base + 501, base + 501 + len(held)))
    assert issued_seq(node) == base + 500 + len(held)
    assert port.restore_point() is None and port.acked_seq() == base - 1
    issue_tickets(node, 1)
    assert node.reader().execute("SELECT min(seq) FROM sync_outbox WHERE seq > ?",
                                 [moved[-1][0]]).fetchone()[0] == moved[-1][0] + 1
    port.resume(0, 10**9)  # a late second answer changes nothing
    assert issued_seq(node) < 10**9


def test_status_shows_json_safe_restore_point(node: Node) -> None:
    """The restore point is plain JSON in node_meta (doctor and support can read it)."""
    node.write(lambda db: set_restore_point(db, 7, "d" * 32))
    raw = node.reader().execute("SELECT value FROM node_meta WHERE key = "
                                "'sync_restore_point'").fetchone()[0]
    assert json.loads(raw) == {"seq": 7, "id": "d" * 32}
