"""HQ ingest on SQLite and PostgreSQL: exactly-once apply, cumulative acks, quarantine."""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from certs import pki
from hq.chain import verify_chain
from hq.ingest import Ingest, register_node
from hq.store import HQDatabase
from sync import envelope
from sync.chain import GENESIS_HASH, entry_hash

HQ_KEY = x25519.X25519PrivateKey.generate()
CA_KEY, CA_CERT = pki.create_ca()


@dataclass
class FakeNode:
    """A node identity that can seal batches (the real agent is tested elsewhere)."""

    node_id: str
    key: ec.EllipticCurvePrivateKey
    cert_pem: str

    def batch(self, records: list[dict[str, Any]], **header: Any) -> bytes:
        """Seal records as one upstream batch."""
        head = {"kind": "batch", "node": self.node_id, "first_seq": records[0]["seq"],
                "last_seq": records[-1]["seq"], **header}
        return envelope.seal(head, records, self.key, HQ_KEY.public_key())


def make_node(db: HQDatabase, node_id: str) -> FakeNode:
    """Enroll a node at HQ."""
    key = pki.new_key()
    cert = pki.issue(CA_KEY, CA_CERT, pki.make_csr(key, node_id, "ISB-01"))
    pem = pki.cert_pem(cert).decode()
    register_node(db, node_id, "ISB-01", pem, None)
    return FakeNode(node_id, key, pem)


def hlc(n: int, node: str) -> str:
    """An HLC string."""
    return f"{1_700_000_000_000 + n:015d}-00000-{node}"


def tickets(node: str, first: int, last: int) -> list[dict[str, Any]]:
    """Outbox-shaped ticket records with seqs first..last."""
    return [{"seq": s, "hlc": hlc(s, node), "tbl": "tickets", "pk": f"{node}-t{s}",
             "op": "insert", "data": {"id": f"{node}-t{s}", "number": f"A-{s:03d}"}}
            for s in range(first, last + 1)]


def count(db: HQDatabase, sql: str, params: list[Any] | None = None) -> int:
    """A single integer from a query."""
    return int(db.execute(sql, params or []).fetchone()[0])


def test_batch_applies_once_and_acks(hq_db: HQDatabase) -> None:
    """A replayed batch is acknowledged again and applied zero more times."""
    node = make_node(hq_db, "NAAAAA")
    ingest = Ingest(hq_db, HQ_KEY)
    payload = node.batch(tickets("NAAAAA", 1, 50))
    first = ingest.handle("t", payload, "NAAAAA")
    again = ingest.handle("t", payload, "NAAAAA")
    assert (first.acked_seq, first.applied) == (50, 50)
    assert (again.acked_seq, again.applied) == (50, 0)
    assert count(hq_db, "SELECT count(*) FROM hq_records WHERE tbl = 'tickets'") == 50


def test_reordered_batches_ack_only_the_contiguous_prefix(hq_db: HQDatabase) -> None:
    """Batch 2 before batch 1: the ack waits for the gap to fill, then jumps."""
    node = make_node(hq_db, "NAAAAA")
    ingest = Ingest(hq_db, HQ_KEY)
    second = ingest.handle("t", node.batch(tickets("NAAAAA", 11, 20)), "NAAAAA")
    assert second.acked_seq == 0 and second.applied == 10
    first = ingest.handle("t", node.batch(tickets("NAAAAA", 1, 10)), "NAAAAA")
    assert first.acked_seq == 20
    assert count(hq_db, "SELECT count(*) FROM hq_seen") == 0  # compacted below the ack


@pytest.mark.parametrize("seed", range(5))
def test_random_order_with_duplicates_converges(hq_db: HQDatabase, seed: int) -> None:
    """Shuffled, duplicated and overlapping batches give every record exactly once."""
    rnd = random.Random(seed)
    node = make_node(hq_db, "NAAAAA")
    ingest = Ingest(hq_db, HQ_KEY)
    batches = []
    for _ in range(30):
        start = rnd.randint(1, 190)
        batches.append((start, min(200, start + rnd.randint(0, 15))))
    batches += [(s, min(200, s + 9)) for s in range(1, 201, 10)]
    rnd.shuffle(batches)
    outcome = None
    for first, last in batches:
        outcome = ingest.handle("t", node.batch(tickets("NAAAAA", first, last)), "NAAAAA")
    assert outcome is not None
    assert count(hq_db, "SELECT acked_seq FROM hq_nodes WHERE node_id = 'NAAAAA'") == 200
    assert count(hq_db, "SELECT count(*) FROM hq_records") == 200


def _quarantined(hq_db: HQDatabase) -> list[str]:
    """Reasons in the quarantine table."""
    return [r[0] for r in hq_db.execute("SELECT reason FROM hq_quarantine").fetchall()]


def _bomb(node: FakeNode) -> bytes:
    """A small, validly signed and encrypted envelope whose body expands past the limit."""
    header = envelope.canonical({"kind": "batch", "node": node.node_id, "first_seq": 1,
                                 "last_seq": 1, "v": envelope.VERSION, "enc": True})
    packed = zstandard.ZstdCompressor().compress(b"[" + b" " * (40 * 1024 * 1024) + b"]")
    body = envelope._SUITE.encrypt(packed, HQ_KEY.public_key(),
                                   info=envelope._INFO_PREFIX + header)
    sig = node.key.sign(header + body, ec.ECDSA(hashes.SHA256()))
    return b"".join([envelope.MAGIC, bytes([envelope.VERSION]), struct.pack(">I", len(header)),
                     header, struct.pack(">I", len(sig)), sig, body])


def test_hostile_payloads_are_quarantined(hq_db: HQDatabase) -> None:
    """Each hostile payload is quarantined with its reason; nothing is applied."""
    a, b = make_node(hq_db, "NAAAAA"), make_node(hq_db, "NBBBBB")
    ingest = Ingest(hq_db, HQ_KEY)
    good = a.batch(tickets("NAAAAA", 1, 5))
    forged = bytearray(good)
    forged[-40] ^= 0xFF  # flip a body byte: the signature no longer matches
    impostor = FakeNode("NBBBBB", a.key, a.cert_pem)  # A's key claiming to be B
    old_version = bytearray(good)
    old_version[3] = 0
    stranger_key = pki.new_key()
    cases = {
        "bad_signature": (bytes(forged), "NAAAAA"),
        "topic_mismatch": (good, "NBBBBB"),
        "bad_signature ": (impostor.batch(tickets("NBBBBB", 1, 5)), "NBBBBB"),
        "too_large": (b"KEV\x01" + b"\0" * (envelope.MAX_ENVELOPE_BYTES + 1), "NAAAAA"),
        "garbage": (b"hello, HQ", "NAAAAA"),
        "bad_version": (bytes(old_version), "NAAAAA"),
        "unknown_node": (FakeNode("NZZZZZ", stranger_key, "").batch(
            tickets("NZZZZZ", 1, 1)), "NZZZZZ"),
        "not_encrypted": (envelope.seal({"kind": "batch", "node": "NAAAAA", "first_seq": 1,
                                         "last_seq": 1}, tickets("NAAAAA", 1, 1), a.key,
                                        None), "NAAAAA"),
        "bad_record": (a.batch([{"seq": 1, "hlc": "x", "tbl": "tickets", "pk": "p",
                                 "op": "insert", "data": {}}]), "NAAAAA"),
    }
    for reason, (payload, topic_node) in cases.items():
        outcome = ingest.handle("topic", payload, topic_node)
        assert outcome.quarantined == reason.strip(), reason
    assert ingest.handle("t", _bomb(a), "NAAAAA").quarantined == "too_large"
    hq_db.execute("UPDATE hq_nodes SET revoked = 1 WHERE node_id = 'NBBBBB'")
    assert ingest.handle("t", b.batch(tickets("NBBBBB", 1, 2)), "NBBBBB").quarantined == "revoked"
    assert count(hq_db, "SELECT count(*) FROM hq_records") == 0
    assert count(hq_db, "SELECT sum(acked_seq) FROM hq_nodes") == 0
    assert len(_quarantined(hq_db)) == len(cases) + 2
    assert ingest.handle("t", good, "NAAAAA").acked_seq == 5  # worker still fine


@pytest.mark.parametrize("table", ["staff", "services", "agencies", "node_meta", "sessions"])
def test_a_node_cannot_write_hq_owned_tables(hq_db: HQDatabase, table: str) -> None:
    """A validly signed batch carrying a table HQ owns (staff accounts, the catalog, …) or
    that never leaves the node is quarantined as not_owned; none of it applies."""
    node = make_node(hq_db, "NAAAAA")
    ingest = Ingest(hq_db, HQ_KEY)
    evil = {"seq": 3, "hlc": hlc(3, "NAAAAA"), "tbl": table, "pk": "s-evil", "op": "insert",
            "data": {"id": "s-evil", "username": "boss", "role": "admin"}}
    records = [*tickets("NAAAAA", 1, 2), evil]
    outcome = ingest.handle("t", node.batch(records), "NAAAAA")
    assert outcome.quarantined == "not_owned"
    reason, detail = hq_db.execute("SELECT reason, detail FROM hq_quarantine").fetchone()
    assert reason == "not_owned" and table in detail
    assert count(hq_db, "SELECT count(*) FROM hq_records") == 0
    assert count(hq_db, "SELECT acked_seq FROM hq_nodes") == 0


def test_every_table_the_node_syncs_is_one_it_may_write() -> None:
    """The node's captured tables and HQ's ownership table agree, and HQ-owned ones are out."""
    from edge_node.store.schema import SYNCED_TABLES
    from sync.merge import NODE_WRITABLE

    assert set(SYNCED_TABLES) == NODE_WRITABLE
    assert not NODE_WRITABLE & {"staff", "services", "agencies", "documents",
                                "priority_classes"}


def _audit_records(node: str, n: int, tamper: int | None = None) -> list[dict[str, Any]]:
    """A valid audit chain of n entries as outbox records (optionally one tampered)."""
    out, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        entry: dict[str, Any] = {
            "id": f"a{seq}", "seq": seq, "at": "t", "actor_id": None, "actor_role": None,
            "action": "x", "entity": None, "entity_id": None, "detail": "{}", "prev_hash": prev}
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
        if seq == tamper:
            entry["detail"] = json.dumps({"edited": True})
        out.append({"seq": seq, "hlc": hlc(seq, node), "tbl": "audit_log", "pk": entry["id"],
                    "op": "insert", "data": entry})
    return out


def test_audit_chain_verification(hq_db: HQDatabase) -> None:
    """HQ flags edited entries, gaps and forks in a node's chain."""
    node = make_node(hq_db, "NAAAAA")
    ingest = Ingest(hq_db, HQ_KEY)
    ingest.handle("t", node.batch(_audit_records("NAAAAA", 6)), "NAAAAA")
    assert verify_chain(hq_db, "NAAAAA") == []
    other = make_node(hq_db, "NBBBBB")
    records = [r for r in _audit_records("NBBBBB", 6, tamper=3) if r["seq"] != 5]
    for i, r in enumerate(records, start=1):
        r["seq"] = i
    ingest.handle("t", other.batch(records), "NBBBBB")
    problems = verify_chain(hq_db, "NBBBBB")
    assert any("entry 3: hash" in p for p in problems)
    assert any("gap" in p for p in problems)




def _down_ack(node: FakeNode, body: Any) -> bytes:
    """A node's down ack with any body, sealed like the agent's."""
    return envelope.seal({"kind": "ack", "node": node.node_id}, body, node.key,
                         HQ_KEY.public_key())


def _queue_three(db: HQDatabase, node_id: str) -> None:
    """A catalog, a decision and a staff account queued for the node (seqs 1..3)."""
    from hq.downstream import enqueue

    enqueue(db, "catalog", {"catalog_version": 7, "agencies": "x"}, node_id)
    enqueue(db, "decision", {"reference": "ISB-01-NNOPE1-20200101-00001", "status": "ready"},
            node_id)
    enqueue(db, "staff", {"accounts": [{"id": "hq-9", "username": "zainab.private"}]},
            node_id)


def test_refusals_in_down_acks_are_recorded_once(hq_db: HQDatabase) -> None:
    """Each refused seq is kept once per node with kind, subject and reason; repeats and old
    acks without the field change nothing else."""
    from hq.refusals import refused_rows

    a, b = make_node(hq_db, "NAAAAA"), make_node(hq_db, "NBBBBB")
    _queue_three(hq_db, "NAAAAA")
    _queue_three(hq_db, "NBBBBB")
    ingest = Ingest(hq_db, HQ_KEY)
    assert ingest.handle("t", _down_ack(a, {"down_seq": 1}), "NAAAAA").down_acked == 1  # old
    first: dict[str, Any] = {"down_seq": 2, "refused": [
        {"seq": 1, "reason": "bad_type", "detail": "catalog: a field has the wrong type"},
        {"seq": 2, "reason": "unknown_reference", "detail": "decision: no application"}]}
    for _ in range(2):  # a resent ack records nothing twice
        assert ingest.handle("t", _down_ack(a, first), "NAAAAA").down_acked == 2
    later = {"down_seq": 3, "refused": [*first["refused"], {
        "seq": 3, "reason": "missing_field", "detail": "staff: a required field role is missing"}]}
    assert ingest.handle("t", _down_ack(a, later), "NAAAAA").down_acked == 3
    hq_db.execute("DELETE FROM hq_down WHERE node_id = 'NBBBBB' AND seq = 2")  # as if pruned
    assert ingest.handle("t", _down_ack(b, {"down_seq": 3, "refused": [
        {"seq": 2, "reason": "unknown_reference", "detail": "x"}]}), "NBBBBB").down_acked == 3
    assert [(r["kind"], r["seq"]) for r in refused_rows(hq_db, "NBBBBB")] == [("unknown", 2)]
    rows = sorted(refused_rows(hq_db, "NAAAAA"), key=lambda r: r["seq"])
    assert [(r["seq"], r["kind"], r["reason"]) for r in rows] == [
        (1, "catalog", "bad_type"), (2, "decision", "unknown_reference"),
        (3, "staff", "missing_field")]
    assert rows[0]["subject"] == "catalog_version 7"
    assert rows[1]["subject"] == "ISB-01-NNOPE1-20200101-00001 -> ready"
    assert rows[2]["subject"] == "accounts hq-9" and "zainab" not in repr(rows)
    assert len(refused_rows(hq_db)) == 4 and len(refused_rows(hq_db, limit=2)) == 2
    assert count(hq_db, "SELECT down_acked FROM hq_nodes WHERE node_id = 'NAAAAA'") == 3
    assert not _quarantined(hq_db)


BAD_REFUSED = {
    "not a list": "oops",
    "entry not an object": [3],
    "seq missing": [{"reason": "bad_type", "detail": "x"}],
    "seq is a bool": [{"seq": True, "reason": "bad_type", "detail": "x"}],
    "seq zero": [{"seq": 0, "reason": "bad_type", "detail": "x"}],
    "seq above the ack": [{"seq": 4, "reason": "bad_type", "detail": "x"}],
    "seq huge": [{"seq": 2**80, "reason": "bad_type", "detail": "x"}],
    "seq text": [{"seq": "1", "reason": "bad_type", "detail": "x"}],
    "reason not a code": [{"seq": 1, "reason": "Bad Type!", "detail": "x"}],
    "reason too long": [{"seq": 1, "reason": "a" * 41, "detail": "x"}],
    "reason missing": [{"seq": 1, "detail": "x"}],
    "detail empty": [{"seq": 1, "reason": "bad_type", "detail": ""}],
    "detail too long": [{"seq": 1, "reason": "bad_type", "detail": "x" * 201}],
    "detail control characters": [{"seq": 1, "reason": "bad_type", "detail": "a\nb\x1b[2J"}],
    "detail not text": [{"seq": 1, "reason": "bad_type", "detail": {"x": 1}}],
    "too many entries": [{"seq": 1, "reason": "bad_type", "detail": "x"}] * 257,
}


@pytest.mark.parametrize("case", list(BAD_REFUSED))
def test_malformed_refusals_quarantine_the_ack(hq_db: HQDatabase, case: str) -> None:
    """A bad refused field: the ack is quarantined with a reason, nothing is recorded."""
    a = make_node(hq_db, "NAAAAA")
    _queue_three(hq_db, "NAAAAA")
    ingest = Ingest(hq_db, HQ_KEY)
    outcome = ingest.handle("t", _down_ack(a, {"down_seq": 3, "refused": BAD_REFUSED[case]}),
                            "NAAAAA")
    assert outcome.quarantined == "bad_refused", case
    assert count(hq_db, "SELECT down_acked FROM hq_nodes") == 0
    assert count(hq_db, "SELECT count(*) FROM hq_down_refused") == 0
    assert _quarantined(hq_db) == ["bad_refused"]
    assert ingest.handle("t", _down_ack(a, {"down_seq": 3}), "NAAAAA").down_acked == 3


def test_fleet_survives_an_unreadable_certificate_or_status(hq_db: HQDatabase) -> None:
    """One bad row (a certificate or status HQ can't parse) shows as unknown; it never
    takes the fleet list (CLI, console, API) down with it."""
    from hq.fleet import fleet

    hq_db.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, status, enrolled_at) "
                  "VALUES (?, ?, ?, ?, ?)",
                  ["NBADC1", "ISB-01", "not a certificate", "{not json", "2026-12-02T00:00:00Z"])
    row = next(r for r in fleet(hq_db) if r["node_id"] == "NBADC1")
    assert row["cert_days_left"] is None and row["state"] == "unknown"
