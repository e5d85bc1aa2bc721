"""PII readable at HQ, protected everywhere (DESIGN "HQ data plane": PII path, fleet blind
index), on SQLite and PostgreSQL: two nodes and HQ exchange USB bundles (the same envelopes
as MQTT). Clear only inside the sealed envelope; HQ's own field key; the fleet index equal
at every node and at HQ; the audited read; rotation, re-index and retirement; a node
enrolled before fleet keys migrates."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_node.bootstrap import init_node
from edge_node.config import load_settings
from edge_node.domain import citizens
from edge_node.node import Node
from edge_node.paths import fleet_key_path
from edge_node.replication.port import NodeOutbox
from hq import fleet_keys
from hq import pii as hq_pii
from hq.bundles import import_bundle
from hq.cli.main import main as hq_cli
from hq.ingest import Ingest
from hq.store import HQDatabase, StoreError, utc_now
from sync import bundle
from sync.identity import NodeIdentity
from sync.merge import State, merge, policy_for
from sync.pii import fleet_index
from tests.sync_env import SyncEnv
from tests.test_hq_ingest import HQ_KEY, hlc, make_node
from tests.tls_broker import TLSBroker

CNIC, NAME, PHONE = "35202-1234567-1", "Ayesha Siddiqa Qureshi", "+923001234567"
ACTOR = {"id": "reception-1", "role": "reception"}
SECRETS = (CNIC, CNIC.replace("-", ""), NAME, "Siddiqa", PHONE, "3001234567")


@pytest.fixture
def env(tmp_path: Path, hq_url: str) -> Iterator[SyncEnv]:
    """HQ keys and store (SQLite or PostgreSQL); bundles carry the data (no broker)."""
    broker = TLSBroker(tmp_path / "broker")
    yield SyncEnv(tmp_path, broker, hq_url)
    broker.stop()


@pytest.fixture
def second(tmp_path: Path) -> Iterator[Node]:
    """A second node, at another center."""
    settings = load_settings(str(tmp_path / "node2"), environ={})
    init_node(settings, "LHR-01")
    opened = Node(settings)
    yield opened
    opened.close()


def enrolled(env: SyncEnv, node: Node) -> NodeIdentity:
    """The node enrolled at HQ the way nodes were before fleet keys (no key in hand)."""
    return env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync",
                      node.center_id)


def register(node: Node, name: str = NAME) -> dict[str, Any]:
    """Register the same person at a node."""
    return node.write(lambda db: citizens.register(
        db, node.keys, cnic=CNIC, name=name, phone=PHONE, id_kind="cnic", actor=ACTOR,
        now=node.timestamp()))


def exchange(env: SyncEnv, node: Node, ident: NodeIdentity, usb: Path) -> None:
    """One round by USB: the node's outbox to HQ, HQ's ack and downstream back."""
    report = bundle.export_outbox(NodeOutbox(node), ident, usb)
    db = HQDatabase(env.hq_url)
    try:
        result = import_bundle(db, env.hq, report.path, usb)
    finally:
        db.close()
    assert result.quarantined_total == 0
    ack = result.nodes[node.node_id].ack_file
    assert ack is not None
    bundle.import_ack_bundle(NodeOutbox(node), ident, ack)


def hq_citizens(url: str) -> list[tuple[str, str, str]]:
    """(id, node, cnic_index) of HQ's citizen projection."""
    db = HQDatabase(url)
    try:
        return [tuple(r) for r in db.execute(
            "SELECT id, node_id, cnic_index FROM hq_citizens ORDER BY node_id").fetchall()]
    finally:
        db.close()


def hq_text(url: str) -> str:
    """Every value in every table of the HQ store, as text (what its disk holds, decrypted
    by the store's own key: SQLCipher pages or PostgreSQL rows)."""
    db = HQDatabase(url)
    try:
        if db.dialect == "sqlite":
            names = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        else:
            names = [r[0] for r in db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "current_schema()").fetchall()]
        return "\n".join(repr(db.execute(f"SELECT * FROM {n}").fetchall()) for n in names)
    finally:
        db.close()


def leaks(blob: str | bytes) -> list[str]:
    """The personal values found in `blob`."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [s for s in SECRETS if s in text]


def node_disk(node: Node) -> bytes:
    """Every file of a node's data directory, raw, plus its outbox rows as stored."""
    root = Path(node.settings["data_dir"])
    raw = b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
    rows = node.reader().execute("SELECT data FROM sync_outbox").fetchall()
    return raw + json.dumps([r[0] for r in rows]).encode()


def test_outbox_keeps_ciphertext_the_envelope_carries_clear(node: Node) -> None:
    """The captured row on disk holds the node's ciphertext; only what is about to be sealed
    carries the values, marked clear."""
    made = register(node)
    stored = node.reader().execute(
        "SELECT data FROM sync_outbox WHERE tbl = 'citizens' AND pk = ?", [made["id"]]
    ).fetchone()[0]
    assert leaks(stored) == [] and json.loads(stored)["cnic_enc"].startswith("v1:")
    record = next(r for r in NodeOutbox(node).pending(0, 10_000) if r["pk"] == made["id"])
    assert (record["data"]["cnic_enc"], record["data"]["name_enc"],
            record["data"]["phone_enc"]) == ({"clear": CNIC}, {"clear": NAME},
                                             {"clear": PHONE})


def test_same_cnic_same_index_hq_reads_audited_nothing_in_clear(
        env: SyncEnv, node: Node, second: Node, tmp_path: Path) -> None:
    """Two nodes register the same CNIC: HQ indexes both alike and decrypts them, each read
    audited; no bundle, no node disk and no HQ table holds a personal value in clear."""
    usb = tmp_path / "usb"
    usb.mkdir()
    first_ident, second_ident = enrolled(env, node), enrolled(env, second)
    made = [register(node), register(second, "Ayesha S. Qureshi")]
    db = HQDatabase(env.hq_url)
    version = fleet_keys.distribute(db)["version"]  # the upgrade: nodes get the fleet key
    db.close()
    for n, ident in ((node, first_ident), (second, second_ident)):
        exchange(env, n, ident, usb)  # records up; the fleet key down: the node re-indexes
        exchange(env, n, ident, usb)  # the re-indexed rows and the down ack up
    assert node.reader().execute("SELECT cnic_index FROM citizens WHERE id = ?",
                                 [made[0]["id"]]).fetchone()[0].startswith(f"f{version}:")
    rows = {r[0]: r for r in hq_citizens(env.hq_url)}
    assert rows[made[0]["id"]][2] == rows[made[1]["id"]][2]
    assert rows[made[0]["id"]][2].startswith(f"f{version}:")
    for n, m in ((node, made[0]), (second, made[1])):  # node and HQ agree on the index
        assert n.reader().execute("SELECT cnic_index FROM citizens WHERE id = ?",
                                  [m["id"]]).fetchone()[0] == rows[m["id"]][2]

    db = HQDatabase(env.hq_url)
    try:
        seen = hq_pii.read_citizen(db, "analyst-7", "case 42", citizen_id=made[1]["id"],
                                   now=utc_now())
        assert (seen["cnic"], seen["name"], seen["phone"]) == (CNIC, "Ayesha S. Qureshi",
                                                               PHONE)
        by_cnic = hq_pii.read_citizen(db, "analyst-7", "case 43", cnic=CNIC, now=utc_now())
        assert by_cnic["cnic"] == CNIC
        audit = hq_pii.reads(db)
        assert [(a["actor"], a["purpose"]) for a in audit] == \
            [("analyst-7", "case 43"), ("analyst-7", "case 42")] or \
            sorted((a["actor"], a["purpose"]) for a in audit) == \
            [("analyst-7", "case 42"), ("analyst-7", "case 43")]
        with pytest.raises(LookupError):
            hq_pii.read_citizen(db, "analyst-7", "case 44", cnic="61101-7654321-3",
                                now=utc_now())
        assert len(hq_pii.reads(db)) == 2  # a miss reads nothing and records nothing
    finally:
        db.close()

    assert leaks(hq_text(env.hq_url)) == []
    for path in sorted(usb.iterdir()):
        assert leaks(path.read_bytes()) == [], path.name
    for n in (node, second):
        assert leaks(node_disk(n)) == []
    if not env.hq_url.startswith("postgres"):
        hq_dir = Path(env.hq_url).parent
        for path in hq_dir.glob("hq.db*"):
            assert leaks(path.read_bytes()) == [], path.name
        key_file = hq_dir / "hq.db.pii.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_citizen_show_decrypts_and_is_audited(env: SyncEnv, node: Node,
                                              tmp_path: Path) -> None:
    """`edge-hq citizen show` prints the citizen and records who read it; reads lists it."""
    usb = tmp_path / "usb"
    usb.mkdir()
    ident = enrolled(env, node)
    made = register(node)
    db = HQDatabase(env.hq_url)
    fleet_keys.distribute(db)
    db.close()
    exchange(env, node, ident, usb)
    runner = CliRunner()
    base = ["--db", env.hq_url, "citizen"]
    shown = runner.invoke(hq_cli, [*base, "show", "--cnic", CNIC.replace("-", ""),
                                   "--actor", "analyst-7", "--purpose", "case 42", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["id"] == made["id"]
    assert json.loads(shown.output)["name"] == NAME
    missing = runner.invoke(hq_cli, [*base, "show", "--cnic", "61101-7654321-3",
                                     "--actor", "analyst-7", "--purpose", "case 43"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    bad = runner.invoke(hq_cli, [*base, "show", "--cnic", "12", "--actor", "a",
                                 "--purpose", "p"])
    assert bad.exit_code != 0 and "CNIC" in bad.output
    listed = runner.invoke(hq_cli, [*base, "reads", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(r["actor"], r["citizen_id"]) for r in json.loads(listed.output)] == \
        [("analyst-7", made["id"])]


def test_rotation_reindexes_everywhere_and_retires_after_all_acks(
        env: SyncEnv, node: Node, second: Node, tmp_path: Path) -> None:
    """Rotate: HQ re-indexes at once, each node re-indexes on the key, lookups by the new
    index work, and the old version is retired only when the last node has acked it."""
    usb = tmp_path / "usb"
    usb.mkdir()
    idents = {node.node_id: enrolled(env, node), second.node_id: enrolled(env, second)}
    made = [register(node), register(second)]
    db = HQDatabase(env.hq_url)
    fleet_keys.distribute(db)
    db.close()
    for n in (node, second):
        exchange(env, n, idents[n.node_id], usb)
        exchange(env, n, idents[n.node_id], usb)

    result = CliRunner().invoke(hq_cli, ["--db", env.hq_url, "fleet-key", "rotate"])
    assert result.exit_code == 0, result.output
    assert "version 2" in result.output
    db = HQDatabase(env.hq_url)
    key2 = hq_pii.current_fleet(db)
    assert key2 is not None and key2[0] == 2
    new_index = fleet_index(2, key2[1], CNIC)
    assert {r[2] for r in hq_citizens(env.hq_url)} == {new_index}  # HQ re-indexed at once
    assert hq_pii.read_citizen(db, "a", "p", cnic=CNIC, now=utc_now())["id"] in \
        {m["id"] for m in made}
    assert [s["pending"] for s in fleet_keys.status(db)] == \
        [[], sorted([node.node_id, second.node_id])]
    db.close()

    exchange(env, node, idents[node.node_id], usb)  # key 2 down, node 1 re-indexes
    assert node.reader().execute("SELECT cnic_index FROM citizens WHERE id = ?",
                                 [made[0]["id"]]).fetchone()[0] == new_index
    assert citizens.lookup(node.reader(), node.keys, CNIC)["id"] == made[0]["id"]
    assert [v for v, _ in node.keys.fleet] == [2, 1]
    assert stat.S_IMODE(fleet_key_path(node.settings).stat().st_mode) == 0o600
    exchange(env, node, idents[node.node_id], usb)  # node 1's down ack reaches HQ
    db = HQDatabase(env.hq_url)
    status = fleet_keys.status(db)
    assert status[0]["retired_at"] is None and status[1]["pending"] == [second.node_id]
    db.close()

    exchange(env, second, idents[second.node_id], usb)
    exchange(env, second, idents[second.node_id], usb)  # the last ack: version 1 retired
    db = HQDatabase(env.hq_url)
    try:
        status = fleet_keys.status(db)
        assert status[0]["retired_at"] is not None and status[1]["pending"] == []
        assert db.execute("SELECT key_enc FROM hq_fleet_keys WHERE version = 1"
                          ).fetchone()[0] is None
    finally:
        db.close()
    assert second.reader().execute("SELECT cnic_index FROM citizens WHERE id = ?",
                                   [made[1]["id"]]).fetchone()[0] == new_index


def test_a_node_enrolled_before_fleet_keys_migrates(env: SyncEnv, node: Node,
                                                     tmp_path: Path) -> None:
    """A node enrolled, with citizens synced, before HQ had fleet keys: HQ held its opaque
    ciphertext. After the upgrade it receives the key, re-indexes and resends; HQ then
    holds the citizen under its own key and indexes it under the fleet key."""
    usb = tmp_path / "usb"
    usb.mkdir()
    ident = enrolled(env, node)
    made = register(node)
    outbox = node.reader().execute("SELECT seq, hlc, tbl, pk, op, data FROM sync_outbox "
                                   "ORDER BY seq").fetchall()
    state = State()  # what an older HQ applied and acked: the node's ciphertext, as sent
    for _, clock, tbl, _pk, op, data in outbox:
        if tbl == "citizens":
            state, _ = merge(state, policy_for(tbl), op, json.loads(data), clock)
    assert str(state.values["cnic_enc"]).startswith("v1:")
    last = outbox[-1][0]
    db = HQDatabase(env.hq_url)
    try:
        with db.transaction() as tx:
            tx.execute("INSERT INTO hq_records (tbl, pk, origin, state, row_json, hlc, "
                       "updated_at) VALUES ('citizens', ?, ?, ?, ?, ?, '')",
                       [made["id"], node.node_id, state.to_json(),
                        json.dumps(state.visible()), max(state.clocks.values())])
            tx.execute("UPDATE hq_nodes SET acked_seq = ? WHERE node_id = ?",
                       [last, node.node_id])
    finally:
        db.close()
    NodeOutbox(node).mark_acked(last)
    assert fleet_key_path(node.settings).exists() is False

    db = HQDatabase(env.hq_url)
    assert fleet_keys.distribute(db) == {"version": 1, "queued": 1, "reindexed": 1}
    db.close()
    exchange(env, node, ident, usb)  # the key down: the node re-indexes its citizens
    exchange(env, node, ident, usb)  # the re-indexed rows up (PII clocks as HQ holds them)
    db = HQDatabase(env.hq_url)
    try:
        current = hq_pii.current_fleet(db)
        assert current is not None
        index = fleet_index(*current, CNIC)
        assert node.reader().execute("SELECT cnic_index FROM citizens WHERE id = ?",
                                     [made["id"]]).fetchone()[0] == index
        assert hq_citizens(env.hq_url) == [(made["id"], node.node_id, index)]
        assert hq_pii.read_citizen(db, "a", "p", cnic=CNIC, now=utc_now())["name"] == NAME
        assert fleet_keys.status(db)[0]["pending"] == []
    finally:
        db.close()
    assert node.reader().execute("SELECT count(*) FROM audit_log WHERE action = "
                                 "'citizen.reindex'").fetchone()[0] == 1


def test_hq_refuses_a_foreign_pii_key(env: SyncEnv, tmp_path: Path) -> None:
    """A store opened with another PII key file is refused, as is a key others can read."""
    HQDatabase(env.hq_url).close()
    if env.hq_url.startswith("postgres"):
        key_file = tmp_path / "other.key"
        key_file.write_text("ab" * 32 + "\n")
        key_file.chmod(0o600)
        with pytest.raises(StoreError, match="not the PII key of this HQ store"):
            HQDatabase(env.hq_url, pii_key_file=key_file)
    else:
        key_file = Path(env.hq_url).with_name("hq.db.pii.key")
        saved = key_file.read_bytes()
        key_file.write_text("ab" * 32 + "\n")
        with pytest.raises(StoreError, match="not the PII key of this HQ store"):
            HQDatabase(env.hq_url)
        key_file.write_bytes(saved)
    key_file.chmod(0o644)
    with pytest.raises(StoreError, match="readable by other users"):
        HQDatabase(env.hq_url, pii_key_file=key_file)


@pytest.mark.parametrize("value", ["v1:opaque", "35202-1234567-1", {"clear": 5},
                                   {"clear": "x", "more": 1}])
def test_pii_in_any_form_but_clear_is_quarantined(hq_db: HQDatabase, value: Any) -> None:
    """A citizen record whose PII field is not `{"clear": text}` or null is refused whole
    (HQ never stores a value it cannot protect or a node's ciphertext it cannot read)."""
    fake = make_node(hq_db, "NAAAAA")
    record = {"seq": 1, "hlc": hlc(1, "NAAAAA"), "tbl": "citizens", "pk": "c1",
              "op": "insert", "data": {"id": "c1", "cnic_enc": value, "name_enc": None}}
    outcome = Ingest(hq_db, HQ_KEY).handle("t", fake.batch([record]), "NAAAAA")
    assert outcome.acked_seq is None or outcome.acked_seq == 0
    assert hq_db.execute("SELECT count(*) FROM hq_records").fetchone()[0] == 0
    assert hq_db.execute("SELECT reason, detail FROM hq_quarantine").fetchone() == \
        ("bad_record", 'citizens.cnic_enc must travel as {"clear": text} or null')
