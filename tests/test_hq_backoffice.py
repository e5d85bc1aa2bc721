"""HQ console back office (issue 11 item 3): the agency inbox, decisions single and bulk,
scope per agency, refusals in the reader's language, outcomes from the node's acks —
Flask test client over a real HQ store (SQLite)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hq import pii, projections, refusals
from hq.console.app import create_app
from hq.store import utc_now
from sync.pii import CLEAR
from tests.test_hq_console import action_rows, csrf, signed_in

NODES = (("node-lhr", "LHR-GULBERG"), ("node-khi", "KHI-SADDAR"))
APPS = (  # reference, node, agency, created_at, citizen name
    ("LHR-0002", "node-lhr", "nadra", "2026-01-05T09:00:00.000Z", "Amina Bibi"),
    ("LHR-0001", "node-lhr", "nadra", "2026-01-02T09:00:00.000Z", "Bilal Khan"),
    ("KHI-0001", "node-khi", "nadra", "2026-01-03T09:00:00.000Z", "Chand Rani"),
    ("KHI-0009", "node-khi", "excise", "2026-01-01T09:00:00.000Z", "Danish Ali"),
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """The console over a SQLite store holding two nodes and four applications."""
    console = create_app(str(tmp_path / "hq" / "hq.db"), test_config={"TESTING": True})
    with console.extensions["hq_store"].use() as db, db.transaction() as tx:
        for node, center in NODES:
            tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, enrolled_at) "
                       "VALUES (?, ?, 'x', ?)", [node, center, utc_now()])
        for reference, node, agency, created, name in APPS:
            citizen = str(uuid.uuid4())
            sealed = pii.protect(tx, "citizens", {"cnic_enc": {CLEAR: "3520212345671"},
                                                  "name_enc": {CLEAR: name}, "phone_enc": None})
            projections.project(tx, "citizens", citizen, node, sealed, "0")
            projections.project(tx, "applications", str(uuid.uuid4()), node, {
                "reference": reference, "citizen_id": citizen, "service_code": "cnic_renewal",
                "agency_code": agency, "documents_seen": ["cnic_copy"],
                "status": "submitted", "created_at": created}, "0")
    yield console
    console.extensions["hq_store"].db.close()


def count(app: Flask, sql: str) -> int:
    """One count from the store."""
    with app.extensions["hq_store"].use() as db:
        return int(db.execute(sql).fetchone()[0])


def decide(client: FlaskClient, refs: list[str], status: str, reason: str = "",
           only: str = "") -> tuple[int, str]:
    """POST a decision; status code and the page after the redirect."""
    data = {"csrf_token": csrf(client, "/backoffice/"), "reference": refs, "status": status,
            "reason": reason, "only": only}
    response = client.post("/backoffice/decide", data=data, follow_redirects=True)
    return response.status_code, response.get_data(as_text=True)


def test_officer_sees_own_agency_oldest_first_with_citizen(app: Flask) -> None:
    officer = signed_in(app, "agency_officer")  # agency NADRA: the node writes `nadra`
    page = officer.get("/backoffice/").get_data(as_text=True)
    assert "KHI-0009" not in page and "Danish Ali" not in page
    assert page.index("LHR-0001") < page.index("KHI-0001") < page.index("LHR-0002")
    assert "Amina Bibi" in page and "Bilal Khan" in page
    with app.extensions["hq_store"].use() as db:
        reads = pii.reads(db)
    assert len(reads) == 3 and {r["actor"] for r in reads} == {"agency-officer"}
    assert {r["purpose"] for r in reads} == {"decision"}
    admin = signed_in(app, "admin")
    assert "KHI-0009" in admin.get("/backoffice/").get_data(as_text=True)
    assert "LHR-0001" not in admin.get("/backoffice/?agency=excise").get_data(as_text=True)


def test_officer_cannot_decide_another_agencys_reference(app: Flask) -> None:
    officer = signed_in(app, "agency_officer")
    status, _ = decide(officer, ["KHI-0009"], "ready")
    assert status == 404
    status, _ = decide(officer, ["LHR-0001", "KHI-0009"], "ready")  # bulk: nothing at all
    assert status == 404
    assert count(app, "SELECT count(*) FROM hq_decisions") == 0
    refused = [r for r in action_rows(app) if r["action"] == "decide"]
    assert [r["outcome"] for r in refused] == ["out_of_scope"] * 2
    assert refused[0]["target"] == "KHI-0009"


def test_single_and_bulk_decisions_are_queued_and_audited(app: Flask) -> None:
    officer = signed_in(app, "agency_officer")
    status, page = decide(officer, [], "ready", only="LHR-0001")
    assert status == 200 and "queued for node node-lhr" in page
    status, page = decide(officer, ["LHR-0002", "KHI-0001"], "rejected", "photo unclear")
    assert status == 200
    with app.extensions["hq_store"].use() as db:
        rows = db.execute("SELECT reference, status, reason, node_id FROM hq_decisions "
                          "ORDER BY reference").fetchall()
        down = db.execute("SELECT count(*) FROM hq_down WHERE kind = 'decision'").fetchone()
    assert [tuple(r) for r in rows] == [
        ("KHI-0001", "rejected", "photo unclear", "node-khi"),
        ("LHR-0001", "ready", None, "node-lhr"),
        ("LHR-0002", "rejected", "photo unclear", "node-lhr")]
    assert down[0] == 3
    audited = [(r["target"], r["outcome"]) for r in action_rows(app) if r["action"] == "decide"]
    assert sorted(audited) == [("KHI-0001 -> rejected", "queued"),
                               ("LHR-0001 -> ready", "queued"),
                               ("LHR-0002 -> rejected", "queued")]
    assert page.count("pending") >= 3  # the outcome column: not yet acked by the nodes


def test_rejection_without_reason_is_refused_with_a_message(app: Flask) -> None:
    officer = signed_in(app, "agency_officer")
    status, page = decide(officer, ["LHR-0001"], "rejected")
    assert status == 200 and "LHR-0001: a rejection needs a reason; nothing sent." in page
    assert count(app, "SELECT count(*) FROM hq_decisions") == 0
    officer.get("/backoffice/?lang=ur")
    _, page = decide(officer, ["LHR-0001"], "rejected")
    assert "a rejection needs a reason" not in page and 'dir="rtl"' in page
    outcomes = [r["outcome"] for r in action_rows(app) if r["action"] == "decide"]
    assert outcomes == ["refused:missing_reason"] * 2


def test_auditor_reads_but_cannot_decide(app: Flask) -> None:
    auditor = signed_in(app, "auditor")
    page = auditor.get("/backoffice/").get_data(as_text=True)
    assert "LHR-0001" in page and 'name="only"' not in page
    response = auditor.post("/backoffice/decide", data={
        "csrf_token": csrf(auditor, "/backoffice/"), "reference": "LHR-0001",
        "status": "ready"})
    assert response.status_code == 403
    assert count(app, "SELECT count(*) FROM hq_decisions") == 0


def test_outcome_shows_the_nodes_refusal(app: Flask) -> None:
    officer = signed_in(app, "agency_officer")
    decide(officer, ["LHR-0001"], "ready")
    with app.extensions["hq_store"].use() as db, db.transaction() as tx:
        seq = tx.execute("SELECT seq FROM hq_decisions").fetchone()[0]
        tx.execute("UPDATE hq_nodes SET down_acked = ? WHERE node_id = 'node-lhr'", [seq])
        refusals.record_refused(tx, "node-lhr", [refusals.Refusal(
            seq, "bad_transition", "application already collected")], utc_now())
    page = officer.get("/backoffice/").get_data(as_text=True)
    assert "refused by the node" in page and "application already collected" in page
    export = officer.get("/backoffice/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [r["reference"] for r in rows] == ["LHR-0001", "KHI-0001", "LHR-0002"]
    assert rows[0]["outcome"] == "refused"
    assert rows[0]["outcome_reason"] == "application already collected"
    assert "Bilal" not in export.get_data(as_text=True)  # no citizen data in the export
