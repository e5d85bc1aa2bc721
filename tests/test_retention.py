"""Retention at the node, on a fake clock: old citizen PII and visit detail leave the node once
HQ acknowledged them, open applications keep theirs, the purge is audited and never deletes
at HQ, a dry run changes nothing, and the doctor reports the oldest PII held."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_node.cli.main import main
from edge_node.config import ConfigError, Settings, load_settings
from edge_node.domain import applications, citizens, counters, feedback, queue, visits
from edge_node.node import Node
from edge_node.ops import retention
from edge_node.ops.doctor import PASS, WARN, run_checks
from edge_node.paths import note_exported
from edge_node.replication.port import NodeOutbox
from hq.bundles import import_bundle
from hq.store import HQDatabase
from sync import bundle
from sync.identity import NodeIdentity
from tests.helpers import NADRA, FakeClock, outbox_mark
from tests.sync_env import SyncEnv, hq_rows

DAYS = 90


@pytest.fixture
def node(clocked_node: Node) -> Node:
    """The demo node on the fake clock."""
    return clocked_node


@dataclass
class Person:
    """One citizen's rows on the node."""

    cnic: str
    citizen: str
    visit: str
    ticket: str
    application: str | None = None


def _staff(node: Node, username: str) -> dict[str, Any]:
    """A demo account as an actor."""
    row = node.reader().execute("SELECT id, role FROM staff WHERE username = ?",
                                [username]).fetchone()
    return {"id": row[0], "role": row[1]}


def arrive(node: Node, cnic: str, *, serve: bool = False,
           application: str | None = None) -> Person:
    """Register a citizen and issue a ticket; optionally serve and rate it, and open an
    application moved to `application` status."""
    reception, boss = _staff(node, "reception"), _staff(node, "supervisor")
    now, day = node.timestamp(), node.today()

    def run(db: Any) -> Person:
        person = citizens.register(db, node.keys, cnic=cnic, name="Amina Bibi",
                                   phone="0300-1234567", id_kind="cnic", actor=reception,
                                   now=now)
        made = visits.create_visit(db, services=[NADRA], priority="normal",
                                   citizen_id=person["id"], missing_documents=[],
                                   actor=reception, now=now, day=day)
        found = Person(cnic, person["id"], made["visit"]["id"], made["ticket"]["id"])
        if serve:
            counter = db.execute("SELECT id, state FROM counters WHERE services LIKE ?",
                                 [f"%{NADRA}%"]).fetchone()
            if counter[1] != "open":
                counters.set_state(db, counter[0], "open", boss, now)
            called = queue.call_next(db, counter[0], boss, now, 2)
            assert called is not None and called["id"] == found.ticket
            queue.complete(db, found.ticket, boss, now)
            feedback.give_feedback(db, found.ticket, 5, "very kind staff", boss, now)
        if application:
            row = applications.create_application(db, {
                "service_code": NADRA, "ticket_id": found.ticket, "citizen_id": None,
                "agency_reference": None, "fee_reference": None, "documents_seen": None},
                actor=boss, now=now, day=day, center_id=node.center_id, node_id=node.node_id)
            for status in ("in_review", "ready", "collected"):
                if applications.rank(status) > applications.rank(application):
                    continue
                if status in applications.CENTER_STATUSES:
                    applications.set_status(db, row["id"], status, None, boss, now)
                else:  # the back office's decision, as it arrives from HQ
                    applications.apply_decision(db, applications.get_application(
                        db, row["id"]), status, None, now)
            found.application = row["id"]
        return found

    return node.write(run)


def ack_all(node: Node) -> int:
    """HQ acknowledges everything in the outbox (as its ack would); the acked seq."""
    seq = outbox_mark(node)[1] or 0
    NodeOutbox(node).mark_acked(seq)
    return seq


def held(node: Node, table: str, row_id: str | None) -> bool:
    """The node still has this row."""
    return node.reader().execute(f"SELECT 1 FROM {table} WHERE id = ?",
                                 [row_id]).fetchone() is not None


def snapshot(node: Node) -> dict[str, Any]:
    """Every row count, the outbox mark and the audit head: equal means nothing changed."""
    db = node.reader()
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    counts = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    head = db.execute("SELECT value FROM node_meta WHERE key = 'audit_head'").fetchone()
    return {"counts": counts, "outbox": outbox_mark(node), "audit": head[0]}


@pytest.fixture
def scene(node: Node, clock: FakeClock) -> dict[str, Person]:
    """Day 0: four citizens; all but `late` acknowledged by HQ. Day 91: a new citizen."""
    people = {
        "served": arrive(node, "35202-1234567-1", serve=True),
        "collected": arrive(node, "35202-1234567-3", application="collected"),
        "waiting": arrive(node, "35202-1234567-5", application="ready"),
    }
    ack_all(node)
    people["late"] = arrive(node, "35202-1234567-7")  # made offline: HQ has not acked it
    clock.advance(days=DAYS + 1)
    people["recent"] = arrive(node, "35202-1234567-9")
    return people


def test_old_acknowledged_pii_and_detail_go_the_rest_stays(node: Node,
                                                           scene: dict[str, Person]) -> None:
    """Served and collected: gone. Open application or unacknowledged or recent: kept."""
    report = retention.run(node)
    for name in ("served", "collected"):
        person = scene[name]
        assert not held(node, "citizens", person.citizen), name
        assert not held(node, "visits", person.visit) and not held(node, "tickets",
                                                                     person.ticket), name
    assert not held(node, "applications", scene["collected"].application)
    for name in ("waiting", "late", "recent"):
        person = scene[name]
        assert held(node, "citizens", person.citizen), name
        assert held(node, "visits", person.visit) and held(node, "tickets", person.ticket), name
    assert held(node, "applications", scene["waiting"].application)
    db = node.reader()
    gone = [scene["served"].ticket, scene["collected"].ticket]
    for table in ("ticket_services", "ticket_events", "feedback"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE ticket_id IN (?, ?)",
                          gone).fetchone()[0] == 0, table
    assert report.counts["citizens"] == 2 and report.counts["applications"] == 1
    assert report.counts["visits"] == 2 and report.counts["feedback"] == 1
    # The day's KPIs survive the detail: the snapshot was taken first.
    kpis = json.loads(db.execute("SELECT data FROM kpi_snapshots WHERE business_date = ?",
                                 ["2026-03-02"]).fetchone()[0])
    assert kpis["issued"] == 4 and kpis["feedback_count"] == 1


def test_purge_is_audited_and_sends_no_delete(node: Node, scene: dict[str, Person]) -> None:
    """One audit entry with counts only; HQ hears of the snapshot and the entry, nothing
    else, with no gap in the seqs."""
    before = outbox_mark(node)[1] or 0
    report = retention.run(node)
    db = node.reader()
    new = db.execute("SELECT seq, tbl, op FROM sync_outbox WHERE seq > ? ORDER BY seq",
                     [before]).fetchall()
    assert [(seq, tbl, op) for seq, tbl, op in new] == [
        (before + 1, "kpi_snapshots", "insert"), (before + 2, "audit_log", "insert")]
    assert db.execute("SELECT count(*) FROM sync_outbox WHERE op = 'delete'").fetchone()[0] == 0
    entry = db.execute("SELECT actor_id, action, entity, detail FROM audit_log "
                       "ORDER BY seq DESC LIMIT 1").fetchone()
    assert entry[:3] == (None, "retention.purge", "node")
    detail = json.loads(entry[3])
    assert detail["citizens"] == 2 and detail["retention_days"] == DAYS
    assert set(detail) <= {*report.counts, "retention_days", "before_day"}
    assert "35202" not in entry[3] and "Amina" not in entry[3]
    from edge_node.domain import audit

    assert audit.verify(db) == []
    assert retention.run(node).removed == 0  # nothing left to do: no second entry
    assert outbox_mark(node)[1] == before + 2


def test_unacknowledged_stays_even_when_exported(node: Node, scene: dict[str, Person]) -> None:
    """Carried away on a USB stick but not acknowledged: kept; once HQ acks it, it goes."""
    note_exported(Path(node.settings["data_dir"]), outbox_mark(node)[1])
    retention.run(node)
    late = scene["late"]
    assert held(node, "citizens", late.citizen) and held(node, "visits", late.visit)
    ack_all(node)
    retention.run(node)
    assert not held(node, "citizens", late.citizen) and not held(node, "visits", late.visit)


def test_an_update_not_yet_acknowledged_keeps_the_row(node: Node, clock: FakeClock) -> None:
    """A visit or citizen whose latest change is not at HQ stays, though the row is old."""
    person = arrive(node, "35202-1234567-1", application="collected")
    other = arrive(node, "35202-1234567-3")
    ack_all(node)
    node.write(lambda db: db.execute("UPDATE tickets SET hold_reason = 'x' WHERE id = ?",
                                     [person.ticket]))
    node.write(lambda db: citizens.update(db, node.keys, other.citizen, name=None,
                                          phone="0301-7654321", actor=_staff(node, "reception"),
                                          now=node.timestamp()))
    clock.advance(days=DAYS + 1)
    report = retention.run(node)
    assert held(node, "visits", person.visit) and held(node, "tickets", person.ticket)
    assert held(node, "citizens", person.citizen)  # its visit is still here
    assert not held(node, "visits", other.visit) and held(node, "citizens", other.citizen)
    assert report.counts["visits"] == 1 and report.counts["applications"] == 1
    assert report.counts["citizens"] == 0


def test_dry_run_changes_nothing_and_counts_what_a_run_removes(
        node: Node, scene: dict[str, Person]) -> None:
    """The dry run's counts are the real run's; the database is as before."""
    before = snapshot(node)
    dry = retention.run(node, dry_run=True)
    assert snapshot(node) == before
    assert dry.dry_run and dry.removed > 0
    real = retention.run(node)
    assert real.counts == dry.counts


def test_batches_remove_the_same_and_audit_each(node: Node, scene: dict[str, Person],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """One visit per transaction: the same rows go as in one go, one audit entry per batch
    that removed something, and the run stops at the visit HQ has not acknowledged."""
    dry = retention.run(node, dry_run=True)
    monkeypatch.setattr(retention, "BATCH_VISITS", 1)
    real = retention.run(node)
    assert real.counts == dry.counts and real.counts["visits"] == 2
    entries = node.reader().execute("SELECT count(*) FROM audit_log WHERE action = "
                                    "'retention.purge'").fetchone()[0]
    assert entries == 2


def test_retention_off_removes_nothing(node: Node, scene: dict[str, Person]) -> None:
    """retention_days = 0 keeps everything."""
    node.settings["retention_days"] = 0
    before = snapshot(node)
    report = retention.run(node)
    assert not report.enabled and report.removed == 0 and snapshot(node) == before


def test_doctor_reports_the_oldest_pii(node: Node, clock: FakeClock,
                                       scene: dict[str, Person]) -> None:
    """WARN while data past retention (+ margin) is held; PASS once the purge took it."""
    def pii_age(days: int = DAYS) -> Any:
        results = run_checks({**node.settings, "retention_days": days}, now=clock,
                             systemctl=None)
        return next(r for r in results if r.check == "pii-age")

    clock.advance(days=5)  # 96 days after day 0: past 90 + the 3-day margin
    result = pii_age()
    assert result.status == WARN and "96.0 days ago" in result.finding
    assert "past the 90-day retention" in result.finding and "retention run" in result.fix
    assert pii_age(days=0).status == PASS
    ack_all(node)
    retention.run(node)
    result = pii_age()
    assert result.status == PASS and "5.0 days ago" in result.finding, result.finding


# -- HQ keeps its copy --------------------------------------------------------------------------

def _round_trip(env: SyncEnv, node: Node, identity: NodeIdentity, usb: Path) -> None:
    """Export the outbox, import it at HQ, bring HQ's ack back."""
    report = bundle.export_outbox(NodeOutbox(node), identity, usb)
    db = HQDatabase(env.hq_url)
    try:
        hq = import_bundle(db, env.hq, report.path, usb)
    finally:
        db.close()
    ack_file = hq.nodes[node.node_id].ack_file
    assert ack_file is not None and hq.quarantined_total == 0
    bundle.import_ack_bundle(NodeOutbox(node), identity, ack_file)


def test_hq_keeps_what_the_node_purged(env: SyncEnv, node: Node, clock: FakeClock,
                                       tmp_path: Path) -> None:
    """After the purge reaches HQ (by USB here), HQ still holds the citizen and the visit."""
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    usb = tmp_path / "usb"
    usb.mkdir()
    person = arrive(node, "35202-1234567-1", serve=True)
    _round_trip(env, node, identity, usb)
    at_hq = hq_rows(env.hq_url, "citizens")[person.citizen]
    assert at_hq is not None
    clock.advance(days=DAYS + 1)
    assert retention.run(node).counts["citizens"] == 1
    _round_trip(env, node, identity, usb)
    assert NodeOutbox(node).stats()["count"] == 0  # HQ acknowledged the snapshot and entry
    assert hq_rows(env.hq_url, "citizens")[person.citizen] == at_hq
    assert hq_rows(env.hq_url, "visits")[person.visit] is not None
    actions = [row["action"] for row in hq_rows(env.hq_url, "audit_log").values() if row]
    assert "retention.purge" in actions


# -- command, job, setting ----------------------------------------------------------------------
def test_cli_dry_run_then_run_prints_counts_only(node: Node, settings: Settings) -> None:
    """`edge-node retention run [--dry-run]` on the real clock (the data is months old)."""
    person = arrive(node, "35202-1234567-1", serve=True)
    ack_all(node)
    node.close()
    args = ["--data-dir", settings["data_dir"], "retention", "run"]
    dry = CliRunner().invoke(main, [*args, "--dry-run"], env={})
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would remove ") and "citizens: 1" in dry.output
    assert "nothing was changed" in dry.output
    done = CliRunner().invoke(main, [*args, "--json"], env={})
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert body["counts"]["citizens"] == 1 and not body["dry_run"] and body["removed"] >= 6
    for output in (dry.output, done.output):
        assert "35202" not in output and "Amina" not in output and person.citizen not in output
    off = CliRunner().invoke(main, args, env={"EDGE_NODE_RETENTION_DAYS": "0"})
    assert off.exit_code == 0 and "retention is off" in off.output


def test_daily_job_is_scheduled(node: Node) -> None:
    """`edge-node serve` runs the purge daily."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from edge_node.service.jobs import add_jobs

    scheduler = BackgroundScheduler(timezone="Asia/Karachi")
    add_jobs(scheduler, node)
    assert scheduler.get_job("retention") is not None


def test_setting_default_and_range(tmp_path: Path) -> None:
    """90 days by default; 0 means never; below 0 is refused."""
    assert load_settings(str(tmp_path), environ={})["retention_days"] == DAYS
    assert load_settings(str(tmp_path), environ={"EDGE_NODE_RETENTION_DAYS": "0"}
                         )["retention_days"] == 0
    with pytest.raises(ConfigError, match="retention_days"):
        load_settings(str(tmp_path), environ={"EDGE_NODE_RETENTION_DAYS": "-1"})
