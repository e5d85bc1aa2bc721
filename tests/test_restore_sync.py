"""After a restore from backup, sync resumes with no duplicates, no gaps and no reused seq.

The trap: records made after the backup reached HQ and were lost with the
disk, so the restored outbox counter is behind what HQ holds. New records
reusing those seqs would be dropped by HQ as duplicates. End to end over the
real TLS broker with an HQ worker and the node agent, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_node import __version__
from edge_node.config import Settings
from edge_node.domain import audit
from edge_node.node import Node
from edge_node.ops.backup import create_backup
from edge_node.ops.restore import record_restore, restore_backup
from edge_node.replication.port import NodeOutbox, restore_point, set_restore_point
from edge_node.store.schema import SYNCED_TABLES
from hq.chain import verify_chain
from hq.downstream import enqueue
from hq.ingest import _advance
from hq.resume import (
    RESUME_MARGIN_SEQS,
    ResumeRequest,
    parse_request,
    reserve,
    restores_in_chain,
)
from hq.store import HQDatabase
from hq.worker import Worker
from sync import envelope, topics
from sync.agent import Agent
from sync.identity import NodeIdentity
from sync.transport import LinkConfig, MqttLink
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
    started = Worker(env.hq_url, env.hq, "localhost", env.broker.hq_port)
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
        head = db.execute("SELECT max(seq) FROM hq_audit WHERE node_id = ?",
                          [node_id]).fetchone()[0]
    finally:
        db.close()
    return {"acked": int(acked), "seen_above": int(above), "chain": problems,
            "audit": int(head or 0)}


def issued_seq(node: Node) -> int:
    """The node's outbox counter (highest seq ever issued)."""
    row = node.reader().execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'sync_outbox'").fetchone()
    return int(row[0])


def restore(settings: Settings, node: Node, path: Path) -> Node:
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
                                                settings: Settings) -> None:
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
        assert after["chain"] == []  # one chain: it continues after HQ's entries …
        db = HQDatabase(env.hq_url)
        try:  # … and `edge-hq chain` shows the restore where it used to show a fork
            assert [line.split(" (")[0] for line in restores_in_chain(db, node.node_id)] \
                == [f"restore at entry {before['audit'] + 1}"]
        finally:
            db.close()
        assert audit.verify(node.reader()) == []
    finally:
        node.close()


@pytest.mark.broker
def test_restore_of_records_hq_never_received(env: SyncEnv, worker: Worker,
                                              settings: Settings) -> None:
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


class TrafficCounter:
    """A subscriber on the broker (the broker's admin identity) counting one node's messages.

    Counts by direction and envelope kind, read from the plaintext header:
    `down` (HQ → node items), `ack` (HQ's acks on .../ack), `up:<kind>` (node → HQ).
    """

    def __init__(self, broker: TLSBroker, node_id: str) -> None:
        """Connect and subscribe to every topic of `node_id`."""
        admin = broker.identity("wiretap")
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.link = MqttLink(LinkConfig(
            client_id="traffic-counter", host="localhost", port=broker.port,
            cafile=str(broker.cafile), certfile=str(admin.certfile),
            keyfile=str(admin.keyfile), subscriptions=[(f"{topics.ROOT}/node/{node_id}/#", 1)],
            clean_start=True, session_expiry_s=0), self._count)
        self.link.start()
        wait_for(lambda: self.link.connected, 10, "traffic counter connected")

    def _count(self, topic: str, payload: bytes) -> None:
        """One message seen."""
        if topic.endswith("/status"):
            return
        try:
            kind = envelope.parse(payload).header.get("kind")
        except envelope.EnvelopeError:
            kind = "unparsable"
        direction = topic.rsplit("/", 1)[1]
        with self._lock:
            self.counts[direction if direction in ("down", "ack") else f"up:{kind}"] += 1

    def take(self) -> Counter[str]:
        """Counts since the last take."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def stop(self) -> None:
        """Disconnect."""
        self.link.stop()


def catalog_version(node: Node) -> int:
    """The catalog version the node has applied."""
    row = node.reader().execute(
        "SELECT value FROM node_meta WHERE key = 'catalog_version'").fetchone()
    return int(row[0]) if row else 0


def publish_catalog(hq_url: str, worker: Worker, node_id: str, version: int) -> None:
    """`edge-hq publish catalog` of the seed at `version`; the worker offers it to the node
    as it does on the node's next message."""
    from edge_node.domain.catalog import load_seed

    db = HQDatabase(hq_url)
    try:
        enqueue(db, "catalog", {**load_seed(), "catalog_version": version})
    finally:
        db.close()
    worker.send_down(node_id)


def hq_down(url: str, node_id: str) -> tuple[int, int]:
    """HQ's (down_seq, down_acked) of a node."""
    db = HQDatabase(url)
    try:
        row = db.execute("SELECT down_seq, down_acked FROM hq_nodes WHERE node_id = ?",
                         [node_id]).fetchone()
    finally:
        db.close()
    return int(row[0]), int(row[1])


QUIET_WINDOW_S = 15
MAX_DOWN_MESSAGES = 4


@pytest.mark.broker
def test_restored_node_gets_downstream_again_without_a_message_loop(
        env: SyncEnv, worker: Worker, settings: Settings) -> None:
    """backup → publish (applied) → restore → publish again: the node applies what follows,
    and the down/ack exchange stays a handful of messages (it used to loop without end)."""
    node = Node(settings)
    identity = env.enroll(node.node_id, Path(settings["data_dir"]) / "sync")
    base = catalog_version(node)
    counter = TrafficCounter(env.broker, node.node_id)
    agent = start_agent(node, identity)
    try:
        made = create_backup(settings, node.keys)
        publish_catalog(env.hq_url, worker, node.node_id, base + 1)
        wait_for(lambda: catalog_version(node) == base + 1, SYNC_TIMEOUT_S, "catalog applied")
        wait_for(lambda: hq_down(env.hq_url, node.node_id) == (1, 1), SYNC_TIMEOUT_S,
                 "HQ to see the downstream ack")
        agent.stop()
        node = restore(settings, node, made.path)
        assert catalog_version(node) == base and NodeOutbox(node).down_seq() == 0
        agent = start_agent(node, identity)
        wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "resume after restore")
        counter.take()
        publish_catalog(env.hq_url, worker, node.node_id, base + 2)
        time.sleep(QUIET_WINDOW_S)
        traffic = counter.take()
        assert traffic["down"] <= MAX_DOWN_MESSAGES, traffic
        assert traffic["up:ack"] <= MAX_DOWN_MESSAGES, traffic
        assert catalog_version(node) == base + 2  # the restored node applies what follows
        assert NodeOutbox(node).down_seq() == 2 == hq_down(env.hq_url, node.node_id)[1]
        time.sleep(5)
        assert sum(counter.take().values()) <= 2  # and then it is quiet
    finally:
        agent.stop()
        counter.stop()
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
        acked, resume_seq, _ = reserve(tx, "NTEST", ResumeRequest(restored_seq, restore_id))
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


def test_downstream_realigns_to_the_node_in_both_directions(
        hq_with_node: HQDatabase, caplog: pytest.LogCaptureFixture) -> None:
    """A node behind HQ's record (restored) gets items again from its seq; a node ahead of
    HQ (HQ's store restored) moves HQ's counter above it; both are logged."""
    from hq.downstream import pending_items, realign

    db = hq_with_node
    for version in (1, 2, 3):
        enqueue(db, "catalog", {"catalog_version": version}, "NTEST")
    db.retrying(lambda tx: realign(tx, "NTEST", 3, "downstream ack"))
    assert pending_items(db, "NTEST") is None
    db.retrying(lambda tx: realign(tx, "NTEST", 1, "resume after restore"))
    found = pending_items(db, "NTEST")
    assert found is not None and [i["seq"] for i in found[0]] == [2, 3]
    assert "stepped back" in caplog.text
    db.retrying(lambda tx: realign(tx, "NTEST", 7, "downstream ack"))
    assert "ahead of HQ" in caplog.text
    enqueue(db, "catalog", {"catalog_version": 4}, "NTEST")
    found = pending_items(db, "NTEST")
    assert found is not None and [i["seq"] for i in found[0]] == [8]


def test_down_pacer_repeats_a_range_only_after_a_growing_pause() -> None:
    """A new range goes at once; the same range after 20 s, 40 s, … at most every 10 min."""
    from hq.downstream import RESEND_FIRST_S, RESEND_MAX_S, DownPacer

    now = [0.0]
    pacer = DownPacer(clock=lambda: now[0])
    assert pacer.allow("N1", 1, 3)
    assert not pacer.allow("N1", 1, 3)
    assert pacer.allow("N2", 1, 3) and pacer.allow("N1", 1, 4)  # per node; new range
    sends = 0
    for _ in range(100_000):  # a node writing ten times a second for almost three hours
        now[0] += 0.1
        sends += pacer.allow("N1", 1, 4)
    assert sends <= 10_000 / RESEND_MAX_S + 8
    pacer.reset("N1")  # the node reconnected
    assert pacer.allow("N1", 1, 4)
    now[0] += RESEND_FIRST_S / 2
    assert not pacer.allow("N1", 1, 4)


def open_applications(node: Node, count: int) -> None:
    """A counter opens `count` applications for new citizens (references, audit entries)."""
    from edge_node.domain.applications import create_application
    from edge_node.domain.citizens import register

    actor = {"id": "staff-1", "role": "operator"}

    def one(db: Any) -> None:
        serial = db.execute("SELECT count(*) FROM citizens").fetchone()[0] + 1
        citizen = register(db, node.keys, cnic=f"61101-{serial:07d}-1", name="Test Citizen",
                           phone=None, id_kind="cnic", actor=actor, now=node.timestamp())
        create_application(db, {"service_code": "nadra_snic_renewal", "ticket_id": None,
                                "citizen_id": citizen["id"], "agency_reference": None,
                                "fee_reference": None, "documents_seen": None},
                           actor=actor, now=node.timestamp(), day=node.today(),
                           center_id=node.center_id, node_id=node.node_id)

    for _ in range(count):
        node.write(one)


def issued_twice_at_hq(url: str) -> dict[str, list[Any]]:
    """Ticket numbers, daily numbers and references HQ holds more than once."""
    tickets = [json.loads(r) for r in hq_rows_json(url, "tickets")]
    apps = [json.loads(r) for r in hq_rows_json(url, "applications")]
    keys: dict[str, list[Any]] = {
        "ticket number": [(t["business_date"], t["number"]) for t in tickets],
        "daily number": [(t["business_date"], t["queue_prefix"], t["daily_number"])
                         for t in tickets],
        "reference": [a["reference"] for a in apps]}
    return {what: sorted({k for k in found if found.count(k) > 1})
            for what, found in keys.items()}


def hq_rows_json(url: str, table: str) -> list[str]:
    """HQ's visible rows of one table as JSON text."""
    db = HQDatabase(url)
    try:
        return [r[0] for r in db.execute("SELECT row_json FROM hq_records WHERE tbl = ? AND "
                                         "row_json IS NOT NULL", [table]).fetchall()]
    finally:
        db.close()


@pytest.mark.broker
def test_restored_node_never_reissues_numbers_hq_has_seen(
        env: SyncEnv, worker: Worker, settings: Settings) -> None:
    """backup → tickets, references, audit entries and a catalog reach HQ → disk lost, restore →
    offline work, a restart with no answer from HQ, publish again → online: every ticket
    number, reference and audit seq is unique at HQ, `edge-hq chain` passes and shows the
    restore, the new catalog is applied."""
    node = Node(settings)
    identity = env.enroll(node.node_id, Path(settings["data_dir"]) / "sync")
    base = catalog_version(node)
    agent = start_agent(node, identity)
    try:
        issue_tickets(node, 2)
        open_applications(node, 2)
        wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "first work at HQ")
        made = create_backup(settings, node.keys)
        publish_catalog(env.hq_url, worker, node.node_id, base + 1)
        issue_tickets(node, 3)
        open_applications(node, 3)  # after the backup: at HQ, then lost with the disk
        wait_for(lambda: synced(node) and catalog_version(node) == base + 1, SYNC_TIMEOUT_S,
                 "post-backup work at HQ")
        lost = {t["number"] for t in node_rows(node, "tickets").values()}
    finally:
        agent.stop()
    before = hq_node(env.hq_url, node.node_id)

    node = restore(settings, node, made.path)
    issue_tickets(node, 3)  # offline: HQ has not answered the resume
    open_applications(node, 2)
    node.close()
    node = Node(settings)  # the node restarts, still without an answer
    try:
        issue_tickets(node, 2)
        open_applications(node, 1)
        offline = {t["number"] for t in node_rows(node, "tickets").values()} - lost
        assert offline and all("-R1-" in n for n in offline), offline
        refs = [a["reference"] for a in node_rows(node, "applications").values()]
        assert sum("-R1-" in r for r in refs) == 3
        publish_catalog(env.hq_url, worker, node.node_id, base + 2)
        agent = start_agent(node, identity)
        try:
            wait_for(lambda: synced(node), SYNC_TIMEOUT_S, "resume after restore")
            issue_tickets(node, 2)  # after HQ's answer
            open_applications(node, 1)
            worker.send_down(node.node_id)
            wait_for(lambda: synced(node) and catalog_version(node) == base + 2,
                     SYNC_TIMEOUT_S, "work after the answer at HQ, new catalog applied")
        finally:
            agent.stop()
        assert issued_twice_at_hq(env.hq_url) == {"ticket number": [], "daily number": [],
                                                  "reference": []}
        after = hq_node(env.hq_url, node.node_id)
        assert after["chain"] == [] and audit.verify(node.reader()) == []
        assert after["audit"] > before["audit"]
        db = HQDatabase(env.hq_url)
        try:
            assert len(restores_in_chain(db, node.node_id)) == 1
        finally:
            db.close()
        for table in ("tickets", "applications", "audit_log"):
            theirs = hq_rows(env.hq_url, table)
            assert all(theirs.get(pk) == row for pk, row in node_rows(node, table).items())
    finally:
        node.close()


def test_restore_epoch_numbers_only_days_up_to_the_restore(node: Node) -> None:
    """Tickets and references for the restore day carry the epoch in their own sequence;
    the next day is plain again (the lost database numbered nothing for it)."""
    from edge_node.domain import epoch
    from edge_node.domain.applications import next_reference
    from edge_node.domain.visits import next_number

    today = node.today()
    node.write(lambda db: epoch.begin(db, today))
    numbers = [node.write(lambda db: next_number(db, "NADRA", today)) for _ in range(2)]
    assert [epoch.ticket_number("A", n) for n in numbers] == ["A-R1-001", "A-R1-002"]
    assert node.write(lambda db: next_number(db, "NADRA", "2999-01-01")) == 1
    ref = node.write(lambda db: next_reference(db, "ISB-01", node.node_id, today))
    assert ref.endswith(f"{today.replace('-', '')}-R1-00001")
    assert node.write(lambda db: epoch.begin(db, today, at_least=5)) == 6
