"""Signed poison envelopes: quarantined with a reason, never a traceback, the next one applies.

A node's key can sign anything (a bug, a tampered node): a body nested far
deeper than Python's recursion limit, seqs past the store's 64-bit integers,
a restore point that would overflow HQ's resume answer. Each must end in
quarantine over both roads (`edge-hq import` and the MQTT worker), on both
HQ stores, and the good envelope after it must still apply.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import zstandard
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

from hq.cli.main import main as hq_cli
from hq.store import HQDatabase
from hq.worker import Worker
from sync import envelope, topics
from sync.bundle import write_bundle
from sync.identity import NodeIdentity
from tests.helpers import wait_for
from tests.sync_env import SyncEnv
from tests.tls_broker import TLSBroker

NODE = "NPOISN"
BIG = 2**63



@pytest.fixture
def ident(env: SyncEnv, tmp_path: Path) -> NodeIdentity:
    """An enrolled node whose key signs the poison."""
    return env.enroll(NODE, tmp_path / "node-sync")


def record(seq: int, **extra: Any) -> dict[str, Any]:
    """A well-formed ticket record with `seq`."""
    return {"seq": seq, "hlc": f"{1_700_000_000_000 + seq % 1000:015d}-00000-{NODE}",
            "tbl": "tickets", "pk": f"t{seq}", "op": "insert",
            "data": {"id": f"t{seq}"}, **extra}


def seal(ident: NodeIdentity, header: dict[str, Any], body: Any) -> bytes:
    """Sign and encrypt like the node does."""
    return envelope.seal({"node": NODE, **header}, body, ident.key, ident.hq_hpke_public)


def deep_body(ident: NodeIdentity, depth: int = 200_000) -> bytes:
    """A signed, encrypted batch whose JSON body nests `depth` lists deep (small on the wire)."""
    return raw_body(ident, {"kind": "batch", "first_seq": 1, "last_seq": 1},
                    b"[" * depth + b"]" * depth)


def raw_body(ident: NodeIdentity, head: dict[str, Any], text: bytes) -> bytes:
    """A signed envelope encrypted to HQ whose body is `text` as it is (no JSON encoder)."""
    header = envelope.canonical({**head, "node": NODE, "v": envelope.VERSION, "enc": True})
    packed = zstandard.ZstdCompressor().compress(text)
    body = envelope._SUITE.encrypt(packed, ident.hq_hpke_public,
                                   info=envelope._INFO_PREFIX + header)
    signature = ident.key.sign(header + body, ec.ECDSA(hashes.SHA256()))
    return b"".join([envelope.MAGIC, bytes([envelope.VERSION]),
                     len(header).to_bytes(4, "big"), header,
                     len(signature).to_bytes(4, "big"), signature, body])


def poisons(ident: NodeIdentity) -> dict[str, bytes]:
    """Each poison the review found, by name."""
    return {
        "deep": deep_body(ident),
        "seq_overflow": seal(ident, {"kind": "batch", "first_seq": BIG + 5,
                                     "last_seq": BIG + 5}, [record(BIG + 5)]),
        "resume_overflow": seal(ident, {"kind": "resume"},
                                {"restored_seq": BIG - 10, "restore_id": "ab" * 16}),
        "down_ack_overflow": seal(ident, {"kind": "ack"}, {"down_seq": BIG + 1}),
        "huge_int": raw_body(ident, {"kind": "batch", "first_seq": 1, "last_seq": 1},
                             b'[{"seq": 1, "n": ' + b"9" * 5000 + b"}]"),
    }


def good(ident: NodeIdentity) -> bytes:
    """A good batch of seqs 1..3."""
    records = [record(s) for s in (1, 2, 3)]
    return seal(ident, {"kind": "batch", "first_seq": 1, "last_seq": 3}, records)


def store_facts(url: str) -> tuple[int, list[str]]:
    """(the node's acked_seq, quarantine reasons)."""
    db = HQDatabase(url)
    try:
        acked = db.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?",
                           [NODE]).fetchone()[0]
        reasons = [r[0] for r in db.execute("SELECT reason FROM hq_quarantine").fetchall()]
    finally:
        db.close()
    return int(acked), sorted(reasons)


def test_cli_import_quarantines_every_poison(env: SyncEnv, ident: NodeIdentity,
                                             tmp_path: Path) -> None:
    """`edge-hq import`: one line naming the quarantine, no traceback, the good batch applies."""
    usb = tmp_path / "usb"
    usb.mkdir()
    path = write_bundle(usb, "poison.keb", [*poisons(ident).values(), good(ident)])
    result = CliRunner().invoke(hq_cli, ["--db", env.hq_url, "import", str(path),
                                         "--keys", str(env.hq_dir)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert "Traceback" not in result.output
    assert "5 envelope(s) quarantined (4 bad_body, 1 bad_header)" in result.output
    acked, reasons = store_facts(env.hq_url)
    assert acked == 3
    assert reasons == ["bad_body"] * 4 + ["bad_header"]


class NodeClient:
    """A raw MQTT client holding the node's certificate (publishes what it is given)."""

    def __init__(self, broker: TLSBroker, ident: NodeIdentity, directory: Path) -> None:
        """Connect as the node and listen on its ack topic."""
        self.acks: list[bytes] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=NODE,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(broker.cafile), certfile=str(directory / "node.pem"),
                            keyfile=str(directory / "node.key"))
        self.client.on_message = lambda c, u, m: self.acks.append(bytes(m.payload))
        self.client.connect("localhost", broker.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, "node to connect")
        self.client.subscribe(topics.ack(NODE), qos=1)

    def publish(self, payload: bytes) -> None:
        """QoS 1 publish on the node's up topic, waiting for the PUBACK."""
        self.client.publish(topics.up(NODE), payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.broker
def test_worker_quarantines_poison_once_and_goes_on(env: SyncEnv, ident: NodeIdentity,
                                                    tmp_path: Path) -> None:
    """Over MQTT: each poison is quarantined once; the next good batch is applied and acked."""
    env.broker.start()
    worker = Worker(env.hq_url, env.hq, "localhost", env.broker.port)
    worker.start()
    client = NodeClient(env.broker, ident, tmp_path / "node-sync")
    try:
        wait_for(lambda: worker.link.connected, 10, "worker to connect")
        for payload in poisons(ident).values():
            client.publish(payload)
        client.publish(good(ident))
        wait_for(lambda: store_facts(env.hq_url)[0] == 3, 30, "the good batch to apply")
        wait_for(lambda: len(client.acks) >= 1, 10, "HQ's ack")
        handled = worker.handled
        time.sleep(2)  # nothing comes back: the poison was taken off the broker once
        assert worker.handled == handled == 6
        assert store_facts(env.hq_url) == (3, ["bad_body"] * 4 + ["bad_header"])
    finally:
        client.close()
        worker.stop()


def test_a_failure_without_a_check_is_quarantined_too(env: SyncEnv, ident: NodeIdentity) -> None:
    """A store that fails mid-apply: the batch is quarantined (reason internal_error), not lost
    in a log line, and once the store is whole again the node's resend applies."""
    from hq.ingest import Ingest

    db = HQDatabase(env.hq_url)
    try:
        ingest = Ingest(db, env.hpke)
        with db.transaction():
            db.execute("ALTER TABLE hq_conflicts RENAME TO hq_conflicts_away")
        outcome = ingest.handle("t", good(ident), NODE)
        assert outcome.quarantined == "internal_error"
        reasons = db.execute("SELECT reason, detail FROM hq_quarantine").fetchall()
        assert [tuple(r) for r in reasons] == [("internal_error", reasons[0][1])]
        assert db.execute("SELECT count(*) FROM hq_records").fetchone()[0] == 0
        with db.transaction():
            db.execute("ALTER TABLE hq_conflicts_away RENAME TO hq_conflicts")
        assert ingest.handle("t", good(ident), NODE).acked_seq == 3
    finally:
        db.close()
