"""Typed HQ projections (hq/projections.py) and recorded HQ migrations (hq/migrations.py),
on SQLite and PostgreSQL: a node's day synced by bundle lands typed, equal to the node's
rows; deletes and replays; rebuild gives identical rows; old stores upgrade."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from edge_node.domain import pii as node_pii
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox
from edge_node.store.schema import SYNCED_TABLES
from hq import migrations
from hq import pii as hq_pii
from hq.bundles import import_bundle
from hq.cli.main import main as hq_cli
from hq.ingest import Ingest
from hq.projections import PROJECTIONS, Projection, rebuild
from hq.store import HQDatabase, open_sqlcipher
from sync import bundle
from sync.merge import FIELD_CLOCKS
from sync.pii import PII_FIELDS
from tests.helpers import DGIP, NADRA, Headers, call_and_complete, call_next, ok, open_counter
from tests.sync_env import SyncEnv
from tests.test_hq_ingest import HQ_KEY, hlc, make_node

Login = Callable[[str], Headers]
Snapshot = dict[str, list[tuple[Any, ...]]]



def a_day_at_the_center(client: FlaskClient, login: Login, node: Node) -> None:
    """Citizens, visits, tickets called and completed, an application moved on, feedback,
    a citizen edit, a volunteer's shift: every projected table gets rows."""
    reception, operator, supervisor = login("reception"), login("operator"), login("supervisor")
    citizens = [ok(client.post("/api/citizens", json={"cnic": f"35202-123456{i}-1",
                                                      "name": "Bilal Ahmed"},
                               headers=reception), 201)["id"] for i in range(3)]
    ok(client.patch(f"/api/citizens/{citizens[0]}", json={"phone": "0300-1234567"},
                    headers=reception))
    for citizen in citizens[:2]:
        ok(client.post("/api/visits", json={"services": [NADRA, DGIP], "citizen_id": citizen},
                       headers=reception), 201)
    for _ in range(3):
        ok(client.post("/api/visits", json={"services": [NADRA]}, headers=reception), 201)
    counter = open_counter(client, operator)
    called = call_next(client, operator, counter)
    assert called is not None
    application = ok(client.post("/api/applications", json={
        "ticket_id": called["id"], "service_code": NADRA, "fee_reference": "PSID-1000234567",
        "documents_seen": ["cnic_original", "cnic_copy"]}, headers=operator), 201)
    ok(client.post(f"/api/applications/{application['id']}/status",
                   json={"status": "in_review"}, headers=supervisor))
    done = ok(client.post(f"/api/tickets/{called['id']}/complete", headers=operator))
    call_and_complete(client, operator, counter)
    ok(client.post("/api/feedback", json={"ticket_id": done["id"], "rating": 4,
                                          "comment": "quick"}, headers=operator), 201)
    volunteer = ok(client.post("/api/volunteers", json={"name": "Hamza Yousaf",
                                                        "phone": "0300-7654321",
                                                        "skills": ["urdu"]},
                               headers=supervisor), 201)
    ok(client.post(f"/api/volunteers/{volunteer['id']}/shifts", json={
        "business_date": node.today(), "planned_start": "09:00", "planned_end": "13:00",
        "assignment": "reception desk"}, headers=supervisor), 201)


def sync_by_bundle(env: SyncEnv, node: Node, usb: Path) -> None:
    """Export the node's outbox and import it at HQ (the USB path: no broker needed)."""
    identity = env.enroll(node.node_id, Path(node.settings["data_dir"]) / "sync")
    report = bundle.export_outbox(NodeOutbox(node), identity, usb)
    db = HQDatabase(env.hq_url)
    try:
        imported = import_bundle(db, env.hq, report.path)
    finally:
        db.close()
    assert (imported.applied_records, imported.quarantined_total) == (report.records, 0)


def projected(db: HQDatabase, p: Projection) -> dict[str, dict[str, Any]]:
    """A projection's rows by id, as column → value."""
    names = p.names
    rows = db.execute(f"SELECT {', '.join(repr(n).replace(chr(39), chr(34)) for n in names)} "
                      f"FROM {p.table}").fetchall()
    return {row[0]: dict(zip(names, row, strict=True)) for row in rows}


def snapshot(db: HQDatabase) -> Snapshot:
    """Every projection's rows, sorted."""
    return {name: sorted(tuple(r.values()) for r in projected(db, p).values())
            for name, p in PROJECTIONS.items()}


@pytest.fixture
def synced(env: SyncEnv, node: Node, client: FlaskClient, login: Login,
           tmp_path: Path) -> Iterator[HQDatabase]:
    """HQ after one realistic day of the demo node arrived by bundle."""
    a_day_at_the_center(client, login, node)
    usb = tmp_path / "usb"
    usb.mkdir()
    sync_by_bundle(env, node, usb)
    db = HQDatabase(env.hq_url)
    yield db
    db.close()


def test_projection_columns_are_the_node_tables_columns(node: Node) -> None:
    """Every synced table is projected with exactly its columns; INTEGER ones as integers."""
    assert set(PROJECTIONS) == set(SYNCED_TABLES)
    for name, p in PROJECTIONS.items():
        info = [(c[1], c[2].upper()) for c in
                node.reader().execute(f"PRAGMA table_info({name})").fetchall()]
        expected = [(column, "int" if kind == "INTEGER" else "text")
                    for column, kind in info if column != "id"]
        assert sorted(p.columns) == sorted(expected), name


def test_projections_equal_the_merge_state_after_sync(synced: HQDatabase, node: Node) -> None:
    """Typed rows at HQ equal the merge state's visible rows (and so the node's rows), with
    center, node and the state's newest clock."""
    center = synced.execute("SELECT center_id FROM hq_nodes").fetchone()[0]
    for name, p in PROJECTIONS.items():
        mine = {r["id"]: r for r in node.reader().query(f"SELECT * FROM {name}")}
        state = {pk: (json.loads(text), clock) for pk, text, clock in synced.execute(
            "SELECT pk, row_json, hlc FROM hq_records WHERE tbl = ?", [name]).fetchall()}
        theirs = projected(synced, p)
        assert set(theirs) == set(state) == set(mine), name
        for pk, row in theirs.items():
            visible, clock = state[pk]
            assert row == {**visible, "center_id": center, "node_id": node.node_id,
                           "updated_hlc": clock}, (name, pk)
            # HQ's merge restates citizens' field clocks in its own form, PII is under HQ's
            # field key (the same values once decrypted at each end); all else as sent
            secret = PII_FIELDS.get(name, ())
            assert {k: v for k, v in row.items() if k != FIELD_CLOCKS and k in mine[pk]
                    and k not in secret} == \
                {k: v for k, v in mine[pk].items() if k != FIELD_CLOCKS and k not in secret}, \
                (name, pk)
            for column in secret:
                assert (row[column] is None) == (mine[pk][column] is None), (name, column)
                if row[column] is not None:
                    assert row[column].startswith(hq_pii.PREFIX)
                    assert hq_pii.decrypt(hq_pii.field_key(synced), name, column,
                                          row[column]) == \
                        node_pii.decrypt(node.keys, name, column, mine[pk][column])
    counts = {name: len(rows) for name, rows in snapshot(synced).items()}
    assert all(counts[t] for t in ("citizens", "visits", "tickets", "ticket_services",
                                   "ticket_events", "counters", "applications", "feedback",
                                   "volunteers", "volunteer_shifts", "audit_log")), counts
    status = synced.execute("SELECT status FROM hq_applications").fetchone()[0]
    assert status == "in_review"


def run_hq(url: str, *args: str) -> Any:
    """`edge-hq --db URL …` in-process."""
    return CliRunner().invoke(hq_cli, ["--db", url, *args])


def test_rebuild_gives_identical_rows_and_repairs(synced: HQDatabase, env: SyncEnv) -> None:
    """Rebuilt projections equal the ones kept record by record, even after damage."""
    before = snapshot(synced)
    synced.execute("UPDATE hq_tickets SET status = 'tampered'")
    synced.execute("DELETE FROM hq_citizens")
    synced.execute("INSERT INTO hq_feedback (id, center_id, node_id, updated_hlc) "
                   "VALUES ('ghost', 'X', 'N', 'h')")
    assert snapshot(synced) != before
    result = run_hq(env.hq_url, "rebuild-projections")
    assert result.exit_code == 0, result.output
    assert f"rebuilt {len(PROJECTIONS)} projection(s)" in result.output
    assert f"tickets: {len(before['tickets'])}/{len(before['tickets'])}" in result.output
    assert snapshot(synced) == before
    one = run_hq(env.hq_url, "rebuild-projections", "--table", "citizens")
    assert one.exit_code == 0 and "rebuilt 1 projection(s)" in one.output
    assert snapshot(synced) == before


def test_rebuild_refuses_an_unknown_table(hq_url: str) -> None:
    """A table with no projection: one line, exit 1, nothing changed."""
    result = run_hq(hq_url, "rebuild-projections", "--table", "staff")
    assert result.exit_code == 1
    assert "no projection of staff" in result.output and "Traceback" not in result.output
    assert "--table TABLE" in run_hq(hq_url, "rebuild-projections", "--help").output


def ticket(seq: int, node: str, op: str = "insert", clock: int | None = None,
           **data: Any) -> dict[str, Any]:
    """One outbox-shaped ticket record (its clock `clock`, by default `seq`)."""
    pk = data.pop("pk", f"{node}-t{seq}")
    body = None if op == "delete" else {"id": pk, "number": f"A-{seq:03d}", "status": "waiting",
                                        "daily_number": seq, **data}
    stamp = hlc(seq if clock is None else clock, node)
    return {"seq": seq, "hlc": stamp, "tbl": "tickets", "pk": pk, "op": op, "data": body}


def test_deletes_and_replays(hq_db: HQDatabase) -> None:
    """A delete removes the row; a stale update after it keeps it gone; replays change
    nothing; a later update shows."""
    node = make_node(hq_db, "NPROJ1")
    ingest = Ingest(hq_db, HQ_KEY)
    first = node.batch([ticket(1, "NPROJ1"), ticket(2, "NPROJ1"),
                        ticket(3, "NPROJ1", "update", pk="NPROJ1-t1", status="called")])
    assert ingest.handle("t", first, "NPROJ1").applied == 3
    rows = projected(hq_db, PROJECTIONS["tickets"])
    assert rows["NPROJ1-t1"]["status"] == "called" and rows["NPROJ1-t1"]["daily_number"] == 3
    assert rows["NPROJ1-t2"]["center_id"] == "ISB-01"
    second = node.batch([ticket(4, "NPROJ1", "delete", pk="NPROJ1-t1")])
    ingest.handle("t", second, "NPROJ1")
    assert set(projected(hq_db, PROJECTIONS["tickets"])) == {"NPROJ1-t2"}
    stale = node.batch([ticket(5, "NPROJ1", "update", clock=3, pk="NPROJ1-t1")])
    assert ingest.handle("t", stale, "NPROJ1").applied == 1
    assert set(projected(hq_db, PROJECTIONS["tickets"])) == {"NPROJ1-t2"}
    before = snapshot(hq_db)
    for payload in (first, second, stale):
        assert ingest.handle("t", payload, "NPROJ1").applied == 0
    assert snapshot(hq_db) == before
    third = node.batch([ticket(6, "NPROJ1", "update", pk="NPROJ1-t2", status="completed")])
    ingest.handle("t", third, "NPROJ1")
    assert projected(hq_db, PROJECTIONS["tickets"])["NPROJ1-t2"]["status"] == "completed"
    with hq_db.transaction() as tx:
        rebuild(tx)
    assert projected(hq_db, PROJECTIONS["tickets"])["NPROJ1-t2"]["status"] == "completed"


def test_values_that_do_not_fit_their_column(hq_db: HQDatabase) -> None:
    """Text in an integer column is NULL, an object in a text column JSON text, a NUL
    replaced: the batch applies (nothing quarantined) and the merge state keeps all."""
    node = make_node(hq_db, "NPROJ2")
    record = ticket(1, "NPROJ2", daily_number="seven", number={"a": 1}, order_key="12",
                    priority_weight=True, hold_reason="x\x00y", recall_count=2**70)
    outcome = Ingest(hq_db, HQ_KEY).handle("t", node.batch([record]), "NPROJ2")
    assert (outcome.applied, outcome.quarantined) == (1, None)
    row = projected(hq_db, PROJECTIONS["tickets"])["NPROJ2-t1"]
    assert (row["daily_number"], row["number"], row["order_key"]) == (None, '{"a": 1}', 12)
    assert (row["priority_weight"], row["hold_reason"], row["recall_count"]) == \
        (1, "x\ufffdy", None)
    assert "seven" in hq_db.execute("SELECT row_json FROM hq_records").fetchone()[0]


def drop_projections(db: HQDatabase) -> None:
    """Make the store look like one from before recorded migrations and projections."""
    with db.transaction() as tx:
        for p in PROJECTIONS.values():
            tx.execute(f"DROP TABLE {p.table}")
        tx.execute("DROP TABLE hq_decisions")
        tx.execute("DROP TABLE hq_migrations")


def test_migrations_are_recorded_and_run_once(hq_url: str) -> None:
    """A new store records each migration by name; opening again runs none."""
    db = HQDatabase(hq_url)
    assert migrations.applied(db) == [name for name, _ in migrations.MIGRATIONS]
    assert migrations.migrate(db, lambda: "2030-01-01T00:00:00.000000Z") == []
    db.close()


def test_an_old_store_upgrades(synced: HQDatabase, env: SyncEnv) -> None:
    """A store made before the ledger (its tables, its records, no projections) gains the
    ledger and projections equal to those kept by ingest, when it is next opened."""
    before = snapshot(synced)
    drop_projections(synced)
    reopened = HQDatabase(env.hq_url)
    try:
        assert migrations.applied(reopened) == [name for name, _ in migrations.MIGRATIONS]
        assert snapshot(reopened) == before
    finally:
        reopened.close()


def test_concurrent_openers_migrate_once(hq_url: str) -> None:
    """Workers opening a new store together: every open succeeds, each migration once."""
    if not hq_url.startswith("postgresql"):  # made (key, empty file) but not yet migrated
        open_sqlcipher(Path(hq_url)).close()
    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            HQDatabase(hq_url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = HQDatabase(hq_url)
    rows = db.execute("SELECT name, count(*) FROM hq_migrations GROUP BY name").fetchall()
    db.close()
    assert sorted(rows) == [(name, 1) for name, _ in migrations.MIGRATIONS]
