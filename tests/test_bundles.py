"""File bundles (USB): format, node export / HQ import / ack import, mixing with MQTT, CLIs."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edge_node import __version__
from edge_node.cli.main import main as node_cli
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox
from hq.bundles import ImportReport, import_bundle
from hq.cli.main import main as hq_cli
from hq.downstream import ack_envelope, enqueue
from hq.store import HQDatabase
from hq.worker import Worker
from sync import batches, bundle, envelope
from sync.agent import Agent
from sync.bundle import BundleError, BundleReader, BundleWriter, write_bundle
from sync.identity import NodeIdentity
from tests.helpers import wait_for
from tests.sync_env import SyncEnv
from tests.test_sync_e2e import assert_hq_equals_node, issue_tickets


@pytest.fixture
def identity(env: SyncEnv, node: Node) -> NodeIdentity:
    """The demo node, enrolled at HQ."""
    return env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")


@pytest.fixture
def usb(tmp_path: Path) -> Path:
    """The directory standing for the USB stick."""
    path = tmp_path / "usb"
    path.mkdir()
    return path


def hq_import(env: SyncEnv, path: Path, ack_dir: Path | None = None) -> ImportReport:
    """Import a bundle at HQ the way `edge-hq import` does."""
    db = HQDatabase(env.hq_url)
    try:
        return import_bundle(db, env.hq, path, ack_dir)
    finally:
        db.close()


def hq_count(env: SyncEnv, sql: str) -> int:
    """One integer from the HQ store."""
    db = HQDatabase(env.hq_url)
    try:
        return int(db.execute(sql).fetchone()[0] or 0)
    finally:
        db.close()


def envelopes_of(path: Path) -> list[bytes]:
    """The envelopes of a bundle."""
    with BundleReader(path) as reader:
        return list(reader)


def assert_nothing_applied(env: SyncEnv) -> None:
    """HQ holds no record and no ack."""
    assert hq_count(env, "SELECT count(*) FROM hq_records") == 0
    assert hq_count(env, "SELECT sum(acked_seq) FROM hq_nodes") == 0


# -- the file format -------------------------------------------------------------------------
def test_round_trip_mode_and_no_leftovers(tmp_path: Path) -> None:
    """Envelopes come back in order from a 0600 file; no temp file stays behind."""
    path = write_bundle(tmp_path, "a.keb", [b"first", b"second" * 1000])
    assert envelopes_of(path) == [b"first", b"second" * 1000]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.keb"]


def test_every_truncation_and_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    """No prefix and no single-byte corruption of a bundle is ever accepted."""
    data = write_bundle(tmp_path, "a.keb", [b"x" * 40, b"y" * 7]).read_bytes()
    bad = tmp_path / "bad.keb"
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(BundleError) as err:
            BundleReader(bad)
        assert err.value.reason in {"foreign", "truncated", "corrupt", "bad_checksum"}, cut
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(BundleError):
            BundleReader(bad)


@pytest.mark.parametrize(("content", "reason", "words"), [
    (b"PK\x03\x04 a zip file", "foreign", "not a Khidmat bundle"),
    (b"", "foreign", "not a Khidmat bundle"),
    (b"KEB\x07" + b"\0" * 40, "bad_version", "unsupported bundle version 7"),
    (b"KEB\x01\xff\xff\xff\xff", "corrupt", "corrupt"),
    (b"KEB\x01\x00\x00\x00\x05abc", "truncated", "truncated"),
])
def test_foreign_and_broken_files(tmp_path: Path, content: bytes, reason: str,
                                  words: str) -> None:
    """Each broken file gets its own clear sentence."""
    path = tmp_path / "f.keb"
    path.write_bytes(content)
    with pytest.raises(BundleError) as err:
        BundleReader(path)
    assert err.value.reason == reason and words in str(err.value)


def test_trailing_data_and_missing_file(tmp_path: Path) -> None:
    """Bytes after the checksum, or no file at all, are refused."""
    path = write_bundle(tmp_path, "a.keb", [b"one"])
    path.write_bytes(path.read_bytes() + b"!")
    with pytest.raises(BundleError, match="after the checksum"):
        BundleReader(path)
    with pytest.raises(BundleError, match="cannot read"):
        BundleReader(tmp_path / "missing.keb")


def test_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Size and envelope-count limits hold for writer and reader."""
    path = write_bundle(tmp_path, "a.keb", [b"a" * 100, b"b", b"c"])
    monkeypatch.setattr(bundle, "MAX_ENVELOPES", 2)
    with pytest.raises(BundleError, match="more than 2 envelopes"):
        BundleReader(path)
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 120)
    with pytest.raises(BundleError) as err:
        BundleReader(path)
    assert err.value.reason == "too_large"
    with BundleWriter(tmp_path) as writer:
        assert not writer.fits(200)
        with pytest.raises(BundleError):
            writer.add(b"z" * 200)
    with pytest.raises(BundleError):
        write_bundle(tmp_path, "huge.keb", [b"z" * (envelope.MAX_ENVELOPE_BYTES + 1)])
    assert [p.name for p in tmp_path.iterdir()] == ["a.keb"]


def test_writer_needs_an_existing_directory(tmp_path: Path) -> None:
    """A missing target (stick not mounted) is a clear error, not a file on local disk."""
    with pytest.raises(BundleError, match="mounted"):
        BundleWriter(tmp_path / "media" / "usb")


# -- node → bundle → HQ → ack bundle → node --------------------------------------------------
def test_round_trip_with_downstream(env: SyncEnv, node: Node, identity: NodeIdentity,
                                    usb: Path) -> None:
    """Export, import at HQ, ack back: backlog zero, HQ equals node, HQ's update applied."""
    from argon2 import PasswordHasher

    issue_tickets(node, 20)
    port = NodeOutbox(node)
    backlog, last = port.stats()["count"], port.stats()["last_seq"]
    seen: list[int] = []
    report = bundle.export_outbox(port, identity, usb, seen.append)
    assert (report.first_seq, report.last_seq, report.records) == (1, last, backlog)
    assert report.complete and sum(seen) == backlog
    assert report.path.name == f"{node.node_id}-up-1-{last}.keb"
    assert port.stats()["count"] == backlog  # nothing leaves the outbox before HQ's ack
    db = HQDatabase(env.hq_url)
    account = {"id": "hq-staff-1", "username": "amina", "full_name": "Amina Khan",
               "role": "supervisor", "password_hash": PasswordHasher().hash("a-long-password"),
               "active": 1, "language": "ur", "version": 1}
    enqueue(db, "staff", {"accounts": [account]}, node.node_id)
    db.close()

    hq = hq_import(env, report.path, usb)
    assert (hq.applied_records, hq.quarantined_total) == (backlog, 0)
    ack_file = hq.nodes[node.node_id].ack_file
    assert ack_file is not None and ack_file.name == f"{node.node_id}-ack-{last}.keb"
    assert len(envelopes_of(ack_file)) == 2  # the ack and the pending staff account

    acked = bundle.import_ack_bundle(port, identity, ack_file)
    assert (acked.acked_seq, acked.advanced, acked.down_applied) == (last, True, 1)
    assert node.reader().execute("SELECT role FROM staff WHERE username = 'amina'"
                                 ).fetchone()[0] == "supervisor"
    new_work = port.stats()["count"]
    assert new_work > 0  # applying HQ's update was itself recorded (staff row, audit)

    again = bundle.export_outbox(port, identity, usb)  # also carries the downstream ack
    assert again.first_seq == last + 1
    back = hq_import(env, again.path, usb)
    assert back.applied_records == new_work
    assert hq_count(env, "SELECT down_acked FROM hq_nodes") == 1
    follow_up = back.nodes[node.node_id].ack_file
    assert follow_up is not None and len(envelopes_of(follow_up)) == 1  # nothing pending
    bundle.import_ack_bundle(port, identity, follow_up)
    assert port.stats()["count"] == 0
    assert_hq_equals_node(node, env.hq_url)
    empty = bundle.export_outbox(port, identity, usb)
    assert empty.first_seq is None and empty.path.name == f"{node.node_id}-up-empty.keb"
    assert hq_import(env, empty.path).nodes[node.node_id].acked_seq == again.last_seq


def test_replaying_bundles_applies_nothing_new(env: SyncEnv, node: Node,
                                               identity: NodeIdentity, usb: Path) -> None:
    """The same bundle twice at HQ, the same ack twice at the node: no second effect."""
    issue_tickets(node, 5)
    port = NodeOutbox(node)
    report = bundle.export_outbox(port, identity, usb)
    first = hq_import(env, report.path, usb)
    records = hq_count(env, "SELECT count(*) FROM hq_records")
    second = hq_import(env, report.path, usb)
    assert first.applied_records == report.records
    assert (second.applied_records, second.quarantined_total) == (0, 0)
    assert hq_count(env, "SELECT count(*) FROM hq_records") == records
    ack_file = second.nodes[node.node_id].ack_file
    assert ack_file is not None
    assert bundle.import_ack_bundle(port, identity, ack_file).advanced
    repeat = bundle.import_ack_bundle(port, identity, ack_file)
    assert not repeat.advanced and repeat.down_applied == 0


def test_bad_checksum_is_refused_before_anything_applies(env: SyncEnv, node: Node,
                                                         identity: NodeIdentity,
                                                         usb: Path) -> None:
    """One flipped byte anywhere: the whole file is refused, nothing applied or quarantined."""
    report = bundle.export_outbox(NodeOutbox(node), identity, usb)
    data = bytearray(report.path.read_bytes())
    data[len(data) // 2] ^= 0x40
    report.path.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        hq_import(env, report.path, usb)
    assert err.value.reason == "bad_checksum"
    assert_nothing_applied(env)
    assert hq_count(env, "SELECT count(*) FROM hq_quarantine") == 0


def test_truncated_bundle_applies_nothing(env: SyncEnv, node: Node, identity: NodeIdentity,
                                          usb: Path) -> None:
    """A stick pulled mid-copy: refused with 'truncated', nothing applied."""
    report = bundle.export_outbox(NodeOutbox(node), identity, usb)
    report.path.write_bytes(report.path.read_bytes()[:-100])
    with pytest.raises(BundleError, match="truncated"):
        hq_import(env, report.path, usb)
    assert_nothing_applied(env)


def test_tampered_envelope_is_quarantined_and_the_rest_applies(
        env: SyncEnv, node: Node, identity: NodeIdentity, usb: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuilt bundle (valid checksum) with one altered batch: that batch is quarantined."""
    monkeypatch.setattr(bundle, "EXPORT_BATCH_RECORDS", 10)
    issue_tickets(node, 10)
    port = NodeOutbox(node)
    report = bundle.export_outbox(port, identity, usb)
    items = envelopes_of(report.path)
    assert len(items) >= 4  # the downstream ack and several batches
    bad = bytearray(items[2])
    bad[-10] ^= 0xFF
    items[2] = bytes(bad)
    forged = write_bundle(usb, "forged.keb", items)
    hq = hq_import(env, forged, usb)
    assert hq.quarantined == {"bad_signature": 1}
    assert hq.accepted == len(items) - 1
    bad_batch = envelope.parse(items[2]).header
    assert hq.nodes[node.node_id].acked_seq == bad_batch["first_seq"] - 1  # waits for the gap
    assert hq.applied_records == report.records - bad_batch["count"]


def test_another_nodes_key_claiming_this_node_is_quarantined(
        env: SyncEnv, node: Node, identity: NodeIdentity, usb: Path, tmp_path: Path) -> None:
    """An enrolled node signing batches in this node's name: quarantined, no ack written."""
    other = env.enroll("NOTHER", tmp_path / "other-sync")
    impostor = dataclasses.replace(identity, key=other.key)
    report = bundle.export_outbox(NodeOutbox(node), impostor, usb)
    hq = hq_import(env, report.path, usb)
    assert hq.quarantined == {"bad_signature": report.envelopes}
    assert hq.nodes == {}
    assert_nothing_applied(env)
    assert not list(usb.glob("*-ack-*"))
    sources = "SELECT count(*) FROM hq_quarantine WHERE substr(source, 1, 7) = 'bundle:'"
    assert hq_count(env, sources) == report.envelopes


def test_several_nodes_and_a_bad_envelope(env: SyncEnv, node: Node, identity: NodeIdentity,
                                          usb: Path, tmp_path: Path) -> None:
    """Envelopes of two nodes plus garbage: both nodes apply and get acks, garbage quarantined."""
    other = env.enroll("NOTHER", tmp_path / "other-sync")
    records = [{"seq": s, "hlc": f"{1_700_000_000_000 + s:015d}-00000-NOTHER", "tbl": "tickets",
                "pk": f"NOTHER-t{s}", "op": "insert", "data": {"id": f"NOTHER-t{s}"}}
               for s in range(1, 6)]
    mine = bundle.export_outbox(NodeOutbox(node), identity, usb)
    mixed = write_bundle(usb, "mixed.keb", [*envelopes_of(mine.path), b"not an envelope",
                                           batches.seal_batch(other, records)])
    hq = hq_import(env, mixed, usb)
    assert hq.quarantined == {"garbage": 1}
    assert hq.applied_records == mine.records + 5
    assert {n: r.acked_seq for n, r in hq.nodes.items()} == {node.node_id: mine.last_seq,
                                                             "NOTHER": 5}
    assert all(r.ack_file is not None for r in hq.nodes.values())


# -- the node refuses acks that are not HQ's, for it ------------------------------------------
def test_node_refuses_foreign_acks(env: SyncEnv, node: Node, identity: NodeIdentity,
                                   usb: Path, tmp_path: Path) -> None:
    """Wrong signer, wrong node, an export bundle: clear error, the outbox untouched."""
    issue_tickets(node, 2)
    port = NodeOutbox(node)
    export = bundle.export_outbox(port, identity, usb)
    last = port.stats()["last_seq"]
    cases = {
        "not signed by this node's HQ": ack_envelope(node.node_id, last, identity.key),
        "addressed to node NOTHER": ack_envelope("NOTHER", last, env.hq.sign_key),
    }
    good = write_bundle(usb, "good.keb", [ack_envelope(node.node_id, last, env.hq.sign_key)])
    for words, bad in cases.items():
        # the good ack comes first: a bad envelope anywhere means nothing is applied
        path = write_bundle(usb, "bad.keb", [*envelopes_of(good), bad])
        with pytest.raises(BundleError, match=words):
            bundle.import_ack_bundle(port, identity, path)
        assert port.acked_seq() == 0
    with pytest.raises(BundleError, match="nothing was applied"):
        bundle.import_ack_bundle(port, identity, export.path)
    with pytest.raises(BundleError, match="no envelopes"):
        bundle.import_ack_bundle(port, identity, write_bundle(usb, "empty.keb", []))
    assert port.stats()["count"] == last
    assert bundle.import_ack_bundle(port, identity, good).acked_seq == last


# -- bundle and MQTT together ----------------------------------------------------------------
class FirstPart:
    """An outbox port that shows the agent only records up to `limit`."""

    def __init__(self, port: NodeOutbox, limit: int) -> None:
        """Wrap the real port."""
        self.port, self.limit = port, limit

    def pending(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Only the first part travels over MQTT."""
        return [r for r in self.port.pending(after_seq, limit) if r["seq"] <= self.limit]

    def __getattr__(self, name: str) -> Any:
        """Everything else is the real port."""
        return getattr(self.port, name)


@pytest.mark.broker
def test_bundle_and_mqtt_together_never_duplicate(env: SyncEnv, node: Node,
                                                  identity: NodeIdentity, usb: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundle exported, half sent over MQTT, bundle imported, ack imported, sync goes on."""
    issue_tickets(node, 30)
    port = NodeOutbox(node)
    exported = bundle.export_outbox(port, identity, usb)
    half = exported.records // 2
    env.broker.start()
    worker = Worker(env.hq_url, env.hq, "localhost", env.broker.hq_port)
    applied: list[int] = []
    handle = worker.ingest.handle

    def counting(source: str, payload: bytes, topic_node: str | None) -> Any:
        outcome = handle(source, payload, topic_node)
        applied.append(outcome.applied)
        return outcome

    monkeypatch.setattr(worker.ingest, "handle", counting)
    worker.start()
    agents: list[Agent] = []
    try:
        agents.append(Agent(FirstPart(port, half), identity, __version__))
        agents[-1].start()
        wait_for(lambda: port.acked_seq() == half, 60, "the first half over MQTT")
        agents[-1].stop()

        assert sum(applied) == half  # MQTT applied the first half, each record once
        hq = hq_import(env, exported.path, usb)
        assert (hq.applied_records, hq.quarantined_total) == (exported.records - half, 0)
        issue_tickets(node, 5)  # new work after the export travels over MQTT only
        agents.append(Agent(port, identity, __version__))
        agents[-1].start()  # resends from seq half+1: HQ acks, applies nothing twice
        ack_file = hq.nodes[node.node_id].ack_file
        assert ack_file is not None
        bundle.import_ack_bundle(port, identity, ack_file)
        wait_for(lambda: port.stats()["count"] == 0, 60, "backlog to reach zero")
        total = port.acked_seq()
        wait_for(lambda: hq_count(env, "SELECT acked_seq FROM hq_nodes") == total, 30,
                 "HQ's ack to settle")
        assert sum(applied) + hq.applied_records == total  # every record applied once
        assert hq_count(env, "SELECT count(*) FROM hq_quarantine") == 0
        assert_hq_equals_node(node, env.hq_url)
    finally:
        for agent in agents:
            agent.stop()
        worker.stop()


# -- the commands ----------------------------------------------------------------------------
def run_node(node: Node, *args: str) -> Result:
    """`edge-node --data-dir … ARGS`."""
    return CliRunner().invoke(node_cli, ["--data-dir", node.settings["data_dir"], *args])


def run_hq(env: SyncEnv, *args: str) -> Result:
    """`edge-hq --db … ARGS`."""
    return CliRunner().invoke(hq_cli, ["--db", env.hq_url, *args])


def assert_one_line_error(result: Result, words: str) -> None:
    """Exit 1 with a single `Error:` line naming the problem, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and words in errors[0], result.output


def test_cli_round_trip(env: SyncEnv, node: Node, identity: NodeIdentity, usb: Path) -> None:
    """export → import --ack-out → import-ack through the real commands."""
    issue_tickets(node, 3)
    last = NodeOutbox(node).stats()["last_seq"]
    exported = run_node(node, "sync", "export", "--out", str(usb))
    assert exported.exit_code == 0, exported.output
    assert f"seq 1..{last}" in exported.output
    path = usb / f"{node.node_id}-up-1-{last}.keb"
    imported = run_hq(env, "import", str(path), "--keys", str(env.hq_dir),
                      "--ack-out", str(usb))
    assert imported.exit_code == 0, imported.output
    assert f"{last} new records applied), 0 quarantined" in imported.output
    again = run_hq(env, "import", str(path), "--keys", str(env.hq_dir))
    assert again.exit_code == 0 and "(0 new records applied)" in again.output
    acked = run_node(node, "sync", "import-ack", str(usb / f"{node.node_id}-ack-{last}.keb"))
    assert acked.exit_code == 0, acked.output
    assert f"ack advanced to seq {last}" in acked.output and "0 record(s) still" in acked.output
    assert_hq_equals_node(node, env.hq_url)


def test_down_ack_format_names_the_refusals_it_covers(env: SyncEnv,
                                                      identity: NodeIdentity) -> None:
    """`{"down_seq": N}` alone when nothing was refused (as before); otherwise `refused`
    lists the newest MAX_REFUSED_IN_ACK entries at or below N."""
    def body(down_seq: int, refused: list[dict[str, Any]] | None) -> Any:
        sealed = envelope.parse(batches.seal_down_ack(identity, down_seq, refused))
        assert sealed.header == {**sealed.header, "kind": "ack", "node": identity.node_id}
        return envelope.open_body(sealed, env.hpke)

    entry = {"seq": 2, "reason": "unknown_reference", "detail": "decision: not here"}
    assert body(3, None) == body(3, []) == {"down_seq": 3}
    assert body(3, [entry, {**entry, "seq": 5}]) == {"down_seq": 3, "refused": [entry]}
    many = [{**entry, "seq": s} for s in range(1, batches.MAX_REFUSED_IN_ACK + 11)]
    assert body(10_000, many)["refused"] == many[10:]


def test_cli_refused_update_travels_back_by_usb(env: SyncEnv, node: Node,
                                                identity: NodeIdentity, usb: Path) -> None:
    """A broken catalog by USB: import-ack lists it, the next export tells HQ, and
    `edge-hq refused` and `edge-hq fleet` show it (once, however often the ack comes)."""
    import json

    from edge_node.domain.catalog import load_seed

    db = HQDatabase(env.hq_url)
    enqueue(db, "catalog", {**load_seed(), "catalog_version": 50, "agencies": "oops"},
            node.node_id)
    enqueue(db, "revocation", {"node_id": "NOTHER"}, node.node_id)
    db.close()
    def newest(pattern: str) -> str:
        return str(max(usb.glob(f"{node.node_id}-{pattern}-*.keb"),
                       key=lambda p: p.stat().st_mtime_ns))

    first = run_node(node, "sync", "export", "--out", str(usb))
    assert first.exit_code == 0, first.output
    imported = run_hq(env, "import", newest("up"), "--keys", str(env.hq_dir), "--ack-out",
                      str(usb))
    assert imported.exit_code == 0, imported.output
    acked = run_node(node, "sync", "import-ack", newest("ack"))
    assert acked.exit_code == 0, acked.output
    assert "1 update(s) from HQ applied" in acked.output
    assert "refused update 1 from HQ (bad_type: catalog:" in acked.output
    assert run_hq(env, "refused").output == ""  # HQ learns it with the next export
    for _ in range(2):  # the same ack twice: recorded once
        again = run_node(node, "sync", "export", "--out", str(usb))
        assert again.exit_code == 0, again.output
        back = run_hq(env, "import", newest("up"), "--keys", str(env.hq_dir))
        assert back.exit_code == 0, back.output
    listed = run_hq(env, "refused", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["node_id"], r["seq"], r["kind"], r["subject"], r["reason"]) for r in rows] == [
        (node.node_id, 1, "catalog", "catalog_version 50", "bad_type")]
    text = run_hq(env, "refused", "--node", node.node_id)
    assert f"node_id={node.node_id}  seq=1  kind=catalog" in text.output
    assert run_hq(env, "refused", "--node", "NOTHER").output == ""
    fleet = json.loads(run_hq(env, "fleet", "--json").output)
    assert [(f["down_pending"], f["down_refused"]) for f in fleet] == [(0, 1)]


def test_cli_errors_are_one_line(env: SyncEnv, node: Node, identity: NodeIdentity,
                                 usb: Path, tmp_path: Path) -> None:
    """Each user error exits 1 with one clear line."""
    assert_one_line_error(run_node(node, "sync", "export", "--out", str(tmp_path / "nope")),
                          "no such directory")
    junk = tmp_path / "junk.keb"
    junk.write_bytes(b"hello")
    assert_one_line_error(run_node(node, "sync", "import-ack", str(junk)),
                          "not a Khidmat bundle")
    assert_one_line_error(run_node(node, "sync", "import-ack", str(tmp_path / "missing")),
                          "cannot read")
    keys = ["--keys", str(env.hq_dir)]
    assert_one_line_error(run_hq(env, "import", str(junk), *keys), "not a Khidmat bundle")
    assert_one_line_error(run_hq(env, "import", str(junk), "--keys", str(tmp_path)),
                          "HQ keys unusable")
    export = bundle.export_outbox(NodeOutbox(node), identity, usb)
    truncated = tmp_path / "cut.keb"
    truncated.write_bytes(export.path.read_bytes()[:200])
    assert_one_line_error(run_hq(env, "import", str(truncated), *keys), "truncated")
    mixed = write_bundle(usb, "mixed.keb", [*envelopes_of(export.path), b"junk"])
    result = run_hq(env, "import", str(mixed), *keys)
    assert_one_line_error(result, "1 envelope(s) quarantined (1 garbage)")
    assert f"{export.envelopes} accepted ({export.records} new records applied)" in result.output
    assert_one_line_error(run_node(node, "sync", "import-ack", str(export.path)),
                          "nothing was applied")
    ack = write_bundle(usb, "ack.keb", [ack_envelope(node.node_id, 1, env.hq.sign_key)])
    assert_one_line_error(run_hq(env, "import", str(ack), *keys), "edge-node sync import-ack")


def test_cli_export_needs_enrollment(node: Node, tmp_path: Path) -> None:
    """A node without sync keys says so."""
    assert_one_line_error(run_node(node, "sync", "export", "--out", str(tmp_path)),
                          "not enrolled")


def test_cli_import_ack_refuses_out_of_range_or_mixed_seqs(
        env: SyncEnv, node: Node, identity: NodeIdentity, usb: Path) -> None:
    """An HQ-signed ack past 64 bits, or down items whose seqs mix types: one clear error line,
    nothing applied (the good ack before them included)."""
    issue_tickets(node, 2)
    port = NodeOutbox(node)
    last = port.stats()["last_seq"]
    ack = ack_envelope(node.node_id, last, env.hq.sign_key)
    node_public = identity.hpke_private.public_key()

    def down(items: list[dict[str, Any]]) -> bytes:
        head = {"kind": "down", "node": node.node_id, "first_seq": 1, "last_seq": 2}
        return envelope.seal(head, items, env.hq.sign_key, node_public)

    staff = {"kind": "staff", "payload": {"accounts": []}}
    cases = {
        "huge_ack": ack_envelope(node.node_id, 2**63 + 1, env.hq.sign_key),
        "mixed": down([{"seq": 1, **staff}, {"seq": "2", **staff}]),
        "huge_down": down([{"seq": 2**63 + 1, **staff}]),
        "bool_down": down([{"seq": True, **staff}]),
    }
    for name, bad in cases.items():
        path = write_bundle(usb, f"{name}.keb", [ack, bad])
        result = run_node(node, "sync", "import-ack", str(path))
        assert_one_line_error(result, "nothing was applied")
        assert (port.acked_seq(), port.down_seq(), port.stats()["count"]) == (0, 0, last), name
