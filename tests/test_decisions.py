"""Back-office decisions with a contract (DESIGN.md "Decisions"), on SQLite and PostgreSQL.

HQ refuses an impossible decision before queueing anything; a decision the node
refuses comes back in its down ack and `edge-hq decisions` shows it refused; the
listing's `applied` always matches the node. End to end through USB bundles and
the real `edge-node` / `edge-hq` commands.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from edge_node.domain import applications, citizens
from edge_node.node import Node
from edge_node.replication.downstream import refusals
from hq import decisions, migrations
from hq.downstream import enqueue
from hq.store import HQDatabase
from sync.identity import NodeIdentity
from tests.helpers import NADRA, decide
from tests.sync_env import SyncEnv
from tests.test_bundles import run_hq, run_node

BOSS = {"id": "s1", "role": "supervisor"}
UNKNOWN = "ISB-01-NNOPE1-20200101-00001"



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


def new_application(node: Node, *moves: str) -> str:
    """A submitted application (moved by a supervisor through `moves`); its reference."""
    def run(db: Any) -> str:
        cnic = f"35202-{secrets.randbelow(10**7):07d}-3"  # a real, encrypted citizen
        citizen_id = citizens.register(db, node.keys, cnic=cnic, name="Amina Bibi",
                                       phone=None, id_kind="cnic", actor=BOSS,
                                       now=node.timestamp())["id"]
        row = applications.create_application(
            db, {"service_code": NADRA, "ticket_id": None, "citizen_id": citizen_id,
                 "agency_reference": None, "fee_reference": None, "documents_seen": None},
            actor=BOSS, now=node.timestamp(), day=node.today(), center_id=node.center_id,
            node_id=node.node_id)
        for status in moves:
            applications.set_status(db, row["id"], status, None, BOSS, node.timestamp())
        return str(row["reference"])
    result: str = node.write(run)
    return result


def node_status(node: Node, reference: str) -> tuple[str, str | None]:
    """(status, decision_reason) at the node."""
    row = applications.get_by_reference(node.reader(), reference)
    return row["status"], row["decision_reason"]


def round_trip(env: SyncEnv, node: Node, usb: Path) -> str:
    """Node export -> HQ import -> node import-ack, with the real commands; the node's output."""
    def newest(kind: str) -> str:
        return str(max(usb.glob(f"{node.node_id}-{kind}-*.keb"),
                       key=lambda p: p.stat().st_mtime_ns))
    ok_(run_node(node, "sync", "export", "--out", str(usb)))
    ok_(run_hq(env, "import", newest("up"), "--keys", str(env.hq_dir), "--ack-out", str(usb)))
    return ok_(run_node(node, "sync", "import-ack", newest("ack"))).output


def ok_(result: Result) -> Result:
    """A command that succeeded."""
    assert result.exit_code == 0, result.output
    return result


def refused_(result: Result, words: str) -> None:
    """A command refused with one clear line naming the problem."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and words in result.output, result.output


def queued(env: SyncEnv) -> tuple[int, int]:
    """(items queued downstream, decisions recorded) at HQ."""
    db = HQDatabase(env.hq_url)
    try:
        return (int(db.execute("SELECT count(*) FROM hq_down").fetchone()[0]),
                int(db.execute("SELECT count(*) FROM hq_decisions").fetchone()[0]))
    finally:
        db.close()


def listed(env: SyncEnv, *args: str) -> list[dict[str, Any]]:
    """`edge-hq decisions --json ARGS`, oldest first."""
    rows: list[dict[str, Any]] = json.loads(ok_(run_hq(env, "decisions", "--json",
                                                       *args)).output)
    return sorted(rows, key=lambda r: r["seq"])


def test_hq_refuses_impossible_decisions_before_sending(env: SyncEnv, node: Node,
                                                       identity: NodeIdentity, usb: Path) -> None:
    """Unknown reference, wrong node, rejected without a reason, a status the back office
    does not set, a lattice-forbidden move: one clear line each, nothing queued."""
    ref = new_application(node, "in_review")
    round_trip(env, node, usb)  # HQ's projection now holds the application, in_review
    refused_(run_hq(env, "publish", "decision", UNKNOWN, "ready"),
             f"unknown application reference {UNKNOWN}")
    refused_(run_hq(env, "publish", "decision", ref, "ready", "--node", "NOTHER"),
             f"held by node {node.node_id}, not NOTHER")
    refused_(run_hq(env, "publish", "decision", ref, "rejected"), "needs a reason")
    refused_(run_hq(env, "publish", "decision", ref, "rejected", "--reason", "  "),
             "a reason must be 1 to 300 printable characters")
    assert run_hq(env, "publish", "decision", ref, "in_review").exit_code == 2  # not a choice
    db = HQDatabase(env.hq_url)
    try:
        for status, words in (("in_review", "set by the center"),
                              ("collected", "set by the center"), ("lost", "must be one of")):
            with pytest.raises(decisions.DecisionRefused, match=words):
                decisions.publish(db, ref, status, None)
    finally:
        db.close()
    assert queued(env) == (0, 0)
    out = ok_(run_hq(env, "publish", "decision", ref, "ready")).output  # routed, no --node
    assert f"for node {node.node_id} (seq 1)" in out
    # HQ knows ready is on its way: the same decision again, or the other one, is refused
    refused_(run_hq(env, "publish", "decision", ref, "ready"), f"{ref} is already ready")
    refused_(run_hq(env, "publish", "decision", ref, "rejected", "--reason", "Fee unpaid"),
             f"{ref} is ready; a decision cannot change it to rejected")
    assert queued(env) == (1, 1)
    assert [r["state"] for r in listed(env)] == ["pending"]
    round_trip(env, node, usb)
    assert node_status(node, ref) == ("ready", None)
    round_trip(env, node, usb)  # the node's ack of it, and its new status, reach HQ
    assert [(r["reference"], r["status"], r["state"]) for r in listed(env)] == [
        (ref, "ready", "applied")]
    node.write(lambda db: applications.set_status(
        db, applications.get_by_reference(db, ref)["id"], "collected", None, BOSS,
        node.timestamp()))
    round_trip(env, node, usb)
    refused_(run_hq(env, "publish", "decision", ref, "ready"),
             f"{ref} is collected; its status never moves back to ready")
    assert queued(env) == (1, 1)


def test_a_refused_decision_comes_back_refused(env: SyncEnv, node: Node,
                                              identity: NodeIdentity, usb: Path) -> None:
    """HQ's view is stale (the center collected offline): the node refuses the decision,
    says why in its ack, and `edge-hq decisions --refused` shows it; the listing's applied
    matches the node. A decision queued the old way (no checks, no reason) still parses."""
    stale, fine = new_application(node, "in_review"), new_application(node, "in_review")
    round_trip(env, node, usb)
    node.write(lambda db: applications.set_status(  # offline: HQ does not know yet
        db, applications.get_by_reference(db, stale)["id"], "collected", None, BOSS,
        node.timestamp()))
    ok_(run_hq(env, "publish", "decision", stale, "ready"))
    ok_(run_hq(env, "publish", "decision", fine, "rejected", "--reason", "Fee challan unpaid"))
    db = HQDatabase(env.hq_url)
    enqueue(db, "decision", {"reference": fine, "status": "ready"}, node.node_id)  # old form
    db.close()
    out = round_trip(env, node, usb)
    assert "refused update 1 from HQ (lattice_forbidden" in out, out
    assert node_status(node, stale) == ("collected", None)
    assert node_status(node, fine) == ("rejected", "Fee challan unpaid")
    assert [(r["seq"], r["reason"]) for r in refusals(node.reader())] == [
        (1, "lattice_forbidden"), (3, "lattice_forbidden")]
    assert [r["state"] for r in listed(env)] == ["pending"] * 3  # no ack yet: not "applied"
    round_trip(env, node, usb)
    rows = listed(env)
    assert [(r["reference"], r["status"], r["state"], r["refusal"]) for r in rows] == [
        (stale, "ready", "refused", "lattice_forbidden"),
        (fine, "rejected", "applied", None),
        (fine, "ready", "refused", "lattice_forbidden")]
    assert f"{stale} is collected; status never moves back to ready" in rows[0][
        "refusal_detail"]
    assert f"{fine} is rejected; a decision cannot change to ready" in rows[2][
        "refusal_detail"]
    assert rows[1]["reason"] == "Fee challan unpaid"
    assert [(r["seq"], r["state"]) for r in listed(env, "--refused")] == [
        (1, "refused"), (3, "refused")]
    text = ok_(run_hq(env, "decisions", "--refused")).output
    assert [line.count("state=refused") for line in text.splitlines()] == [1, 1]
    assert f"reference={stale}" in text and "refusal=lattice_forbidden" in text
    for row in rows:  # every decision reported applied is what the node holds
        if row["state"] == "applied":
            assert node_status(node, row["reference"]) == (row["status"], row["reason"])
    db = HQDatabase(env.hq_url)
    projected = db.execute("SELECT status, decision_reason FROM hq_applications WHERE "
                           "reference = ?", [fine]).fetchone()
    db.close()
    assert tuple(projected) == ("rejected", "Fee challan unpaid")


@pytest.mark.parametrize(("payload", "reason"), [
    ({"status": "in_review"}, "center_status"),
    ({"status": "collected"}, "center_status"),
    ({"status": "rejected"}, "missing_reason"),
    ({"status": "rejected", "reason": ""}, "bad_reason"),
    ({"status": "rejected", "reason": "line\nbreak"}, "bad_reason"),
    ({"status": "rejected", "reason": 7}, "bad_reason"),
    ({"status": "approved"}, "unknown_status"),
])
def test_node_refuses_decisions_off_the_contract(node: Node, payload: dict[str, Any],
                                                 reason: str) -> None:
    """The node checks the same contract as HQ: refused with a reason code, nothing changed."""
    ref = new_application(node, "in_review")
    refusal = decide(node, ref, payload["status"], payload.get("reason"))
    assert refusal is not None and refusal["reason"] == reason
    assert node_status(node, ref) == ("in_review", None)


def test_node_applies_a_decision_once(node: Node) -> None:
    """The same decision twice is one move; another reason for it is refused, not applied."""
    ref = new_application(node)
    assert decide(node, ref, "rejected", "Documents expired") is None
    assert decide(node, ref, "rejected", "Documents expired") is None
    refusal = decide(node, ref, "rejected", "Another reason")
    assert refusal is not None and refusal["reason"] == "lattice_forbidden"
    assert node_status(node, ref) == ("rejected", "Documents expired")
    moves = node.reader().execute("SELECT count(*) FROM audit_log WHERE action = "
                                  "'application.decision'").fetchone()[0]
    assert moves == 1


def test_old_store_gains_decisions(hq_db: HQDatabase, hq_url: str) -> None:
    """A store from before 0003: queued decisions are listed, applications gain the reason."""
    from tests.test_hq_ingest import make_node

    make_node(hq_db, "NOLD01")
    enqueue(hq_db, "decision", {"reference": UNKNOWN, "status": "ready"}, "NOLD01")
    with hq_db.transaction() as tx:
        tx.execute("DROP TABLE hq_decisions")
        tx.execute("DROP TABLE hq_applications")
        tx.execute("DELETE FROM hq_migrations WHERE name = '0004_decisions'")
        tx.execute("CREATE TABLE hq_applications (id TEXT PRIMARY KEY, reference TEXT, "
                   "center_id TEXT NOT NULL, node_id TEXT NOT NULL, updated_hlc TEXT NOT NULL)")
    reopened = HQDatabase(hq_url)
    try:
        assert migrations.applied(reopened)[-1] == "0004_decisions"
        assert [(r["reference"], r["state"]) for r in decisions.rows(reopened)] == [
            (UNKNOWN, "pending")]
        reopened.execute("SELECT decision_reason, decided_at FROM hq_applications")
    finally:
        reopened.close()
