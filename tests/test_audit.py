"""The hash-chained audit log: every staff action is recorded, tampering is detected."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from edge_node.cli.main import main
from edge_node.domain import audit
from edge_node.node import Node
from edge_node.paths import db_path
from edge_node.store.db import open_database
from sync.chain import entry_hash
from sync.changes import register_clock
from sync.hlc import Clock
from tests.helpers import DGIP, NADRA, Headers, counter_id, log_in, ok

CNIC = re.compile(r"\d{5}-?\d{7}-?\d")
CITIZEN_NAME = "Ayesha Bibi"
CITIZEN_CNIC = "35202-1234567-8"
CITIZEN_PHONE = "0300-7654321"


def entries(node: Node) -> list[dict[str, Any]]:
    """Every audit entry, oldest first."""
    return list(node.reader().query("SELECT * FROM audit_log ORDER BY seq"))


def verify_cli(node: Node) -> Any:
    """Run `edge-node --data-dir <node> audit verify`."""
    return CliRunner().invoke(main, ["--data-dir", node.settings["data_dir"], "audit", "verify"])


def tamper(node: Node, sql: str, params: list[Any]) -> None:
    """Change the database behind the node's back, as someone holding the key could."""
    db = open_database(db_path(node.settings), node.keys)
    register_clock(db.conn, Clock("TAMPER"))  # the capture triggers call sync_hlc()
    with db.conn:
        db.execute(sql, params)
    db.close()


def run_a_shift(client: FlaskClient) -> list[tuple[str, str, str]]:
    """Drive every kind of staff action once; return (user, action, entity id) per step."""
    op, rec = log_in(client, "operator"), log_in(client, "reception")
    counter1 = counter_id(client, op, "Counter 1")
    counter2 = counter_id(client, op, "Counter 2")
    steps: list[tuple[str, str, str]] = [("operator", "login", ""), ("reception", "login", "")]

    def do(user: str, headers: Headers, action: str, url: str,
           body: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
        result: dict[str, Any] = ok(client.post(url, json=body, headers=headers), status)
        entity = result.get("id") or (result.get("ticket") or result.get("visit") or {}).get(
            "id", "")
        steps.append((user, action, entity))
        return result

    do("operator", op, "counter.open", f"/api/counters/{counter1}/state", {"state": "open"})
    do("operator", op, "counter.open", f"/api/counters/{counter2}/state", {"state": "open"})
    citizen = do("reception", rec, "citizen.register", "/api/citizens",
                 {"cnic": CITIZEN_CNIC, "name": CITIZEN_NAME, "phone": CITIZEN_PHONE}, 201)
    visit = do("reception", rec, "visit.create", "/api/visits",
               {"services": [NADRA, DGIP], "priority": "elderly",
                "citizen_id": citizen["id"]}, 201)
    steps[-1] = ("reception", "visit.create", visit["visit"]["id"])
    do("reception", rec, "visit.create", "/api/visits",
       {"services": [NADRA], "missing_documents": ["cnic_copy"]}, 201)
    steps[-1] = (*steps[-1][:2], "")
    ticket = visit["ticket"]["id"]
    do("operator", op, "ticket.called", f"/api/counters/{counter1}/call-next")
    do("operator", op, "ticket.recalled", f"/api/tickets/{ticket}/recall")
    do("operator", op, "ticket.held", f"/api/tickets/{ticket}/hold",
       {"reason": f"{CITIZEN_NAME} ({CITIZEN_CNIC}) went to photocopy"})
    do("operator", op, "ticket.resumed", f"/api/tickets/{ticket}/resume")
    do("operator", op, "ticket.no_show", f"/api/tickets/{ticket}/no-show")
    do("reception", rec, "ticket.rejoined", f"/api/tickets/{ticket}/rejoin")
    do("operator", op, "ticket.called", f"/api/counters/{counter1}/call-next")
    do("operator", op, "ticket.service_done", f"/api/tickets/{ticket}/complete")
    do("operator", op, "ticket.called", f"/api/counters/{counter2}/call-next")
    do("operator", op, "ticket.transferred", f"/api/tickets/{ticket}/transfer",
       {"counter_id": counter2})
    do("operator", op, "ticket.called", f"/api/counters/{counter2}/call-next")
    do("operator", op, "ticket.service_done", f"/api/tickets/{ticket}/complete")
    steps.append(("operator", "ticket.completed", ticket))  # the last service closes the visit
    do("operator", op, "counter.paused", f"/api/counters/{counter2}/state",
       {"state": "paused", "reason": "prayer"})
    do("operator", op, "counter.closed", f"/api/counters/{counter1}/state", {"state": "closed"})
    do("operator", op, "logout", "/api/auth/logout")
    steps[-1] = ("operator", "logout", "")
    return steps


def test_every_staff_action_is_a_chained_entry(client: FlaskClient, node: Node) -> None:
    """Each action appends an entry naming its actor and role, linked to the one before."""
    before = len(entries(node))
    steps = run_a_shift(client)
    staff = {r["username"]: r for r in node.reader().query("SELECT id, username, role "
                                                           "FROM staff")}
    log = entries(node)
    recorded = [(e["actor_id"], e["actor_role"], e["action"]) for e in log[before:]]
    expected = [(staff[u]["id"], staff[u]["role"], action) for u, action, _ in steps]
    assert recorded == expected
    for (_, _, entity), entry in zip(steps, log[before:], strict=True):
        if entity:
            assert entry["entity_id"] == entity, entry["action"]
    for prev, entry in pairwise(log):
        assert (entry["seq"], entry["prev_hash"]) == (prev["seq"] + 1, prev["hash"])
        assert entry["hash"] == entry_hash(entry)
    assert audit.verify(node.reader()) == []


def test_refused_actions_are_not_audited(client: FlaskClient, node: Node) -> None:
    """A 409 changes nothing, so there is nothing to record."""
    op = log_in(client, "operator")
    counter = counter_id(client, op, "Counter 1")
    count = len(entries(node))
    resp = client.post(f"/api/counters/{counter}/call-next", headers=op)
    assert resp.status_code == 409
    assert len(entries(node)) == count


def test_audit_entries_hold_no_pii(client: FlaskClient, node: Node) -> None:
    """No CNIC, citizen name or staff name appears in any entry, even via free text."""
    run_a_shift(client)
    result = CliRunner().invoke(main, [
        "--data-dir", node.settings["data_dir"], "staff", "add", "amina",
        "--name", "Amina Khan", "--role", "supervisor", "--password", "a-long-password"])
    assert result.exit_code == 0, result.output
    names = [r[0] for r in node.reader().execute("SELECT full_name FROM staff")]
    for entry in entries(node):
        text = " ".join(str(v) for k, v in entry.items() if k not in ("hash", "prev_hash"))
        assert not CNIC.search(text), entry
        for name in [CITIZEN_NAME, CITIZEN_PHONE, "7654321", *names]:
            assert name not in text, (name, entry)


def test_verify_prints_ok(client: FlaskClient, node: Node) -> None:
    """An untouched log verifies, with its entry count."""
    run_a_shift(client)
    result = verify_cli(node)
    assert result.exit_code == 0, result.output
    assert f"ok: {len(entries(node))} audit entries, chain intact" in result.output


@pytest.mark.parametrize(("change", "named"), [
    ("edit", "entry 4: content was modified"),
    ("delete_middle", "entry 4: missing"),
    ("delete_last", "log ends at entry"),
    ("delete_all", "log ends at entry 0"),
    ("rehash", "entry 5: previous-hash link broken"),
])
def test_verify_detects_tampering(client: FlaskClient, node: Node, change: str,
                                  named: str) -> None:
    """Editing or deleting any entry — first, middle or last — makes verify exit 1 naming it."""
    run_a_shift(client)
    last = len(entries(node))
    if change == "edit":
        tamper(node, "UPDATE audit_log SET detail = ? WHERE seq = 4", ['{"number":"A-999"}'])
    elif change == "delete_middle":
        tamper(node, "DELETE FROM audit_log WHERE seq = 4", [])
    elif change == "delete_last":
        tamper(node, "DELETE FROM audit_log WHERE seq = ?", [last])
        named = f"log ends at entry {last - 1} but head is {last}"
    elif change == "delete_all":
        tamper(node, "DELETE FROM audit_log", [])
    else:  # edit an entry and recompute its own hash: the next link breaks
        entry = entries(node)[3]
        entry["detail"] = '{"number":"A-999"}'
        tamper(node, "UPDATE audit_log SET detail = ?, hash = ? WHERE seq = 4",
               [entry["detail"], entry_hash(entry)])
    result = verify_cli(node)
    assert result.exit_code == 1, result.output
    assert f"FAIL {named}" in result.output, result.output
    assert "Traceback" not in result.output
