"""Downstream items applied at the node: catalog, staff, decisions, revocations."""

from __future__ import annotations

import copy
from typing import Any

from argon2 import PasswordHasher
from flask.testing import FlaskClient

from edge_node.domain.catalog import load_seed
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox
from tests.helpers import NADRA, call_and_complete, log_in, open_counter


def _scalar(node: Node, sql: str, params: list[Any] | None = None) -> Any:
    """One value from the node's database."""
    return node.reader().execute(sql, params or []).fetchone()[0]


def test_new_catalog_applies_over_live_visits(client: FlaskClient, node: Node) -> None:
    """A catalog version that drops a service does not break existing visits."""
    rec, op = log_in(client, "reception"), log_in(client, "operator")
    assert client.post("/api/visits", json={"services": [NADRA]}, headers=rec).status_code == 201
    catalog = copy.deepcopy(load_seed())
    catalog["catalog_version"] += 1
    catalog["agencies"][0]["services"] = [
        s for s in catalog["agencies"][0]["services"] if s["code"] != "nadra_nicop"]
    catalog["agencies"][0]["services"][1]["standard_minutes"] = 12
    port = NodeOutbox(node)
    port.apply_down(1, "catalog", catalog)
    assert port.down_seq() == 1
    assert _scalar(node, "SELECT active FROM services WHERE code = 'nadra_nicop'") == 0
    assert _scalar(node, "SELECT standard_minutes FROM services WHERE code = ?",
                   [catalog["agencies"][0]["services"][1]["code"]]) == 12
    resp = client.post("/api/visits", json={"services": ["nadra_nicop"]}, headers=rec)
    assert resp.status_code == 404  # inactive services cannot be requested any more
    counter = open_counter(client, op)
    assert call_and_complete(client, op, counter)["status"] == "done"


def test_older_or_broken_catalog_is_ignored(node: Node) -> None:
    """The node keeps its last good catalog; the item still counts as handled."""
    port = NodeOutbox(node)
    version = _scalar(node, "SELECT value FROM node_meta WHERE key = 'catalog_version'")
    port.apply_down(1, "catalog", {**load_seed(), "catalog_version": 0})
    port.apply_down(2, "catalog", {"catalog_version": 99, "agencies": "oops"})
    port.apply_down(3, "no-such-kind", {})
    assert port.down_seq() == 3
    assert _scalar(node, "SELECT value FROM node_meta WHERE key = 'catalog_version'") == version
    assert _scalar(node, "SELECT count(*) FROM services WHERE active = 1") == 64


def test_staff_versions_and_deactivation(client: FlaskClient, node: Node) -> None:
    """A newer staff version wins; deactivating an account ends its sessions."""
    port = NodeOutbox(node)
    account = {"id": "hq-1", "username": "amina", "full_name": "Amina", "role": "operator",
               "password_hash": PasswordHasher().hash("a-long-password"), "active": 1,
               "language": "ur", "version": 2}
    port.apply_down(1, "staff", {"accounts": [account]})
    resp = client.post("/api/auth/login", json={"username": "amina",
                                                "password": "a-long-password"})
    assert resp.status_code == 200
    token = resp.get_json()["token"]
    port.apply_down(2, "staff", {"accounts": [{**account, "role": "manager", "version": 1}]})
    assert _scalar(node, "SELECT role FROM staff WHERE id = 'hq-1'") == "operator"
    port.apply_down(3, "staff", {"accounts": [{**account, "active": 0, "version": 3}]})
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401


def test_decision_moves_an_application_up_only(client: FlaskClient, node: Node) -> None:
    """HQ's decision follows the lattice: ready applies, a later 'in_review' does not."""
    rec, op = log_in(client, "reception"), log_in(client, "operator")
    citizen = client.post("/api/citizens", json={"cnic": "35202-1234567-3",
                                                 "name": "Test Person"}, headers=rec)
    visit = client.post("/api/visits", json={"services": [NADRA],
                                              "citizen_id": citizen.get_json()["id"]},
                        headers=rec).get_json()
    counter = open_counter(client, op)
    client.post(f"/api/counters/{counter}/call-next", headers=op)
    app = client.post("/api/applications", json={"ticket_id": visit["ticket"]["id"],
                                                  "service_code": NADRA}, headers=op)
    assert app.status_code == 201, app.get_json()
    reference = app.get_json()["reference"]
    port = NodeOutbox(node)
    port.apply_down(1, "decision", {"reference": reference, "status": "ready"})
    port.apply_down(2, "decision", {"reference": reference, "status": "in_review"})
    assert _scalar(node, "SELECT status FROM applications WHERE reference = ?",
                   [reference]) == "ready"
    assert port.down_seq() == 2


def test_revocation_is_remembered(node: Node) -> None:
    """The fleet hears of revoked nodes."""
    NodeOutbox(node).apply_down(1, "revocation", {"node_id": "NBADNODE", "serial": "1"})
    assert "NBADNODE" in _scalar(node, "SELECT value FROM node_meta WHERE key = "
                                       "'revoked_nodes'")


def test_refused_items_are_kept_with_a_reason_and_no_pii(node: Node) -> None:
    """Each refused item is kept once with a machine reason and a text; values never echo."""
    port = NodeOutbox(node)
    port.apply_down(1, "catalog", {**load_seed(), "catalog_version": 99, "agencies": "oops"})
    port.apply_down(2, "staff", {"accounts": [{"id": "hq-9", "username": "zainab.private",
                                               "full_name": "Zainab Private"}]})
    port.apply_down(3, "decision", {"reference": "ISB-01-NNOPE1-20200101-00001",
                                    "status": "ready"})
    port.apply_down(4, "decision", {"reference": "ISB-01-NNOPE1-20200101-00002",
                                    "status": "zainab.private"})
    port.apply_down(5, "no-such-kind", {})
    port.apply_down(6, "revocation", {"node_id": "NBADNODE"})  # valid: applied, not listed
    broken = copy.deepcopy(load_seed())
    broken["catalog_version"] = 99
    broken["agencies"][0]["services"][1]["code"] = broken["agencies"][0]["services"][0]["code"]
    broken["agencies"][0]["services"][0]["code"] += "\n\x1b[2J" + "x" * 300
    broken["agencies"][0]["services"][1]["code"] = broken["agencies"][0]["services"][0]["code"]
    port.apply_down(7, "catalog", broken)  # a domain message quoting a hostile code
    port.apply_down(2, "staff", {"accounts": []})  # a resent item changes nothing
    refused = port.refused_down()
    assert [(r["seq"], r["reason"]) for r in refused] == [
        (1, "bad_type"), (2, "missing_field"), (3, "unknown_reference"), (4, "unknown_status"),
        (5, "unknown_kind"), (7, "invalid")]
    assert all(set(r) == {"seq", "reason", "detail"} and 0 < len(r["detail"]) <= 200
               and r["detail"].isprintable() for r in refused)
    assert "role" in refused[1]["detail"]  # the missing field is named
    assert "zainab" not in repr(refused).lower()
    assert port.down_seq() == 7


def test_refusals_kept_are_bounded_to_the_newest(node: Node) -> None:
    """Only the newest MAX_REFUSED_IN_ACK refusals are kept (and repeated in every ack)."""
    from sync.batches import MAX_REFUSED_IN_ACK

    port = NodeOutbox(node)
    for seq in range(1, MAX_REFUSED_IN_ACK + 4):
        port.apply_down(seq, "no-such-kind", {})
    seqs = [r["seq"] for r in port.refused_down()]
    assert seqs == list(range(4, MAX_REFUSED_IN_ACK + 4))


def test_live_summary_counts_today_and_carries_no_pii(client: FlaskClient, node: Node) -> None:
    """What the node's status message tells HQ's monitoring room: today's figures, ticket
    numbers at most, never a citizen's data; and nothing at all rather than a failure."""
    from tests.test_sync_e2e import issue_tickets

    port = NodeOutbox(node)
    empty = port.live_summary()
    assert empty is not None and empty["waiting"] == 0
    issue_tickets(node, 3)
    live = port.live_summary()
    assert live is not None and live["waiting"] == 3
    assert live["longest_wait_s"] is not None or live["waiting"] == 0
    text = repr(live)
    assert "Amina" not in text and "35202" not in text  # no names, no CNICs
    node.close()  # a closed database: the status must still go out, without the summary
    assert port.live_summary() is None


def test_a_staff_item_clashing_with_a_local_account_is_refused_not_retried(node: Node) -> None:
    """HQ sends an account whose username this node already has under another id: the
    item is refused with a reason (reported in the ack) and the stream goes on, instead of
    a database error that would stop every later item for good."""
    port = NodeOutbox(node)
    clash = {"accounts": [{"id": "hq-staff-1", "username": "reception", "full_name": "X",
                           "role": "operator", "password_hash": PasswordHasher().hash("x" * 12),
                           "active": 1, "language": "en", "version": 1}]}
    port.apply_down(1, "staff", clash)
    port.apply_down(2, "revocation", {"node_id": "GONE01"})
    assert port.down_seq() == 2
    refused = port.refused_down()
    assert [(r["seq"], r["reason"]) for r in refused] == [(1, "conflict")]
