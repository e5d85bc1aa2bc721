"""Screen actions through the Flask test client: applications hand-over, kiosk by number,
operator actions, sync export when not enrolled, the technician's doctor results."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge_node.domain import applications, counters, queue
from edge_node.node import Node
from local_ui.views.kiosk import normalise_number
from tests.helpers import decide
from tests.ui.conftest import token_of
from tests.ui.test_ui_guards import make_ticket

Client = Callable[[str | None], FlaskClient]
ACTOR = {"id": None, "role": "manager"}


def post(client: FlaskClient, path: str, **form: Any) -> Any:
    """A form POST with the session's CSRF token."""
    return client.post(path, data={**form, "csrf_token": token_of(client)})


def counter_one(node: Node) -> dict[str, Any]:
    """Demo counter 1 (NADRA)."""
    return next(c for c in counters.list_counters(node.reader()) if c["name"] == "Counter 1")


def served_ticket(node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ticket called and completed at counter 1, straight through the domain."""
    ticket, counter = make_ticket(node), counter_one(node)
    now = node.timestamp()
    node.write(lambda db: counters.set_state(db, counter["id"], "open", ACTOR, now))
    node.write(lambda db: queue.call_next(db, counter["id"], ACTOR, now, 2))
    node.write(lambda db: queue.complete(db, ticket["id"], ACTOR, now))
    return ticket, counter


def test_operator_actions(ui_client: Client, node: Node) -> None:
    """Open, call, recall, hold, resume, transfer, no-show and rejoin from the console."""
    client = ui_client("operator")
    counter = counter_one(node)
    ticket = make_ticket(node)
    client.get(f"/operator?counter={counter['id']}")
    base = f"/operator/counter/{counter['id']}"
    assert post(client, f"{base}/state", state="open").status_code == 302
    post(client, f"{base}/call-next")
    page = client.get("/operator").get_data(as_text=True)
    assert 'id="current-number"' in page and ticket["number"] in page
    for action, form in [("recall", {}), ("hold", {"reason": "fetching copy"}),
                         ("resume", {}), ("no-show", {}), ("rejoin", {})]:
        post(client, f"/operator/tickets/{ticket['id']}/{action}", **form)
        status = node.reader().execute("SELECT status FROM tickets WHERE id = ?",
                                       [ticket["id"]]).fetchone()[0]
        assert status == {"recall": "called", "hold": "held", "resume": "called",
                          "no-show": "no_show", "rejoin": "waiting"}[action], action
    post(client, f"{base}/call-next")
    post(client, f"/operator/tickets/{ticket['id']}/transfer",
         service_code="dgip_passport_renewal")
    row = node.reader().execute("SELECT status, service_code FROM tickets WHERE id = ?",
                                [ticket["id"]]).fetchone()
    assert tuple(row) == ("waiting", "dgip_passport_renewal")
    resp = post(client, f"{base}/call-next")
    assert "Nobody is waiting" in client.get(resp.location).get_data(as_text=True)
    resp = post(client, f"{base}/state", state="paused", reason="nap")  # not a reason
    assert "Not done" in client.get(resp.location).get_data(as_text=True)


def test_application_opened_then_handed_over(ui_client: Client, node: Node) -> None:
    """The operator opens it; the supervisor cannot mark it ready (the back office does,
    through HQ); once ready the operator hands it over."""
    ticket, _ = served_ticket(node)
    operator = ui_client("operator")
    form = operator.get(f"/applications/new?ticket={ticket['id']}").get_data(as_text=True)
    assert 'name="documents_seen"' in form
    bad = post(operator, "/applications", ticket_id=ticket["id"],
               service_code=ticket["service_code"], fee_reference="no spaces allowed")
    assert "letters, digits" in operator.get(bad.location).get_data(as_text=True)
    assert 'name="cnic"' in form  # a walk-in ticket: the citizen is named here
    unknown = post(operator, "/applications", ticket_id=ticket["id"],
                   service_code=ticket["service_code"], cnic="61101-1234567-2")
    assert "not registered yet" in operator.get(unknown.location).get_data(as_text=True)
    resp = post(operator, "/applications", ticket_id=ticket["id"],
                service_code=ticket["service_code"], fee_reference="PSID-99",
                documents_seen=["cnic_original"], cnic="61101-1234567-2", name="Sana")
    assert resp.status_code == 302
    created = applications.list_applications(node.reader())[0]
    assert created["fee_reference"] == "PSID-99" and created["status"] == "submitted"
    refused = post(operator, f"/applications/{created['id']}/status", status="ready")
    assert "Not done" in operator.get(refused.location).get_data(as_text=True)
    supervisor = ui_client("supervisor")
    refused = post(supervisor, f"/applications/{created['id']}/status", status="ready")
    assert "back office" in supervisor.get(refused.location).get_data(as_text=True)
    assert applications.get_application(node.reader(), created["id"])["status"] == "submitted"
    assert decide(node, created["reference"], "ready") is None  # the decision, from HQ
    page = operator.get("/applications?status=ready").get_data(as_text=True)
    assert "Handed over" in page
    post(operator, f"/applications/{created['id']}/status", status="collected")
    assert applications.get_application(node.reader(), created["id"])["status"] == "collected"


@pytest.mark.parametrize(("raw", "number"), [
    ("a17", "A-017"), ("A-017", "A-017"), (" b-۰۰۳ ", "B-003"), ("A--1", None), ("17", None)])
def test_kiosk_ticket_numbers(raw: str, number: str | None) -> None:
    """What a citizen types becomes the printed number form."""
    assert normalise_number(raw) == number


def test_kiosk_rates_by_number_once(ui_client: Client, node: Node) -> None:
    """A typed number is found for today; a second rating is refused politely."""
    ticket, _ = served_ticket(node)
    kiosk = ui_client("kiosk")
    page = post(kiosk, "/kiosk/rate", number=ticket["number"].lower(), rating="4",
                comment="<i>ok</i>").get_data(as_text=True)
    assert 'id="thanks"' in page
    row = node.reader().execute("SELECT rating, comment FROM feedback").fetchone()
    assert tuple(row) == (4, "<i>ok</i>")
    again = post(kiosk, "/kiosk/rate", number=ticket["number"], rating="5").get_data(
        as_text=True)
    assert 'id="thanks"' not in again and "rated already" in again
    missing = post(kiosk, "/kiosk/rate", number="Z-999", rating="5").get_data(as_text=True)
    assert "could not find" in missing


def test_kiosk_offers_the_ticket_just_served(ui_client: Client, node: Node) -> None:
    """A tablet set to a counter shows the last unrated ticket served there."""
    ticket, counter = served_ticket(node)
    kiosk = ui_client("kiosk")
    resp = kiosk.get(f"/kiosk?counter={counter['id']}")
    assert "khidmat_kiosk_counter=" in resp.headers["Set-Cookie"]
    assert f'value="{ticket["id"]}"' in resp.get_data(as_text=True)
    assert f'value="{ticket["id"]}"' in kiosk.get("/kiosk").get_data(as_text=True)


def test_sync_export_needs_enrollment(ui_client: Client) -> None:
    """An unenrolled node says why it cannot export, instead of failing."""
    client = ui_client("technician")
    page = client.get("/sync").get_data(as_text=True)
    assert 'data-sync="count"' in page and "<progress" in page
    resp = post(client, "/sync/export")
    assert resp.status_code == 302
    assert "not enrolled" in client.get(resp.location).get_data(as_text=True)


def test_ui_export_records_the_export_for_retire(ui_client: Client, node: Node,
                                                tmp_path: Path) -> None:
    """The bundle downloaded from /sync is recorded like `edge-node sync export`'s: retire's
    check then counts its records as exported, not stranded."""
    from edge_node.ops.retire import readiness
    from edge_node.replication.port import NodeOutbox
    from tests.sync_env import SyncEnv
    from tests.test_sync_e2e import issue_tickets
    from tests.tls_broker import TLSBroker

    SyncEnv(tmp_path, TLSBroker(tmp_path / "broker"), str(tmp_path / "hq.db")).enroll(
        node.node_id, Path(node.settings["data_dir"]) / "sync")
    client = ui_client("technician")  # logging in is audited: a record of its own
    issue_tickets(node, 2)
    last = NodeOutbox(node).stats()["last_seq"]
    assert readiness(node.settings, node.keys).stranded == last
    resp = post(client, "/sync/export")
    assert resp.status_code == 200, resp.status_code
    assert f"{node.node_id}-up-1-{last}.keb" in resp.headers["Content-Disposition"]
    ready = readiness(node.settings, node.keys)
    assert (ready.exported, ready.stranded) == (last, 0)


@dataclass(frozen=True)
class FakeResult:
    """Shaped like edge_node.ops.doctor.Result."""

    check: str
    status: str
    finding: str
    fix: str = ""


def test_technician_runs_the_doctor(ui_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a doctor module the page runs its checks and shows each verdict."""
    fake = types.ModuleType("edge_node.ops.doctor")
    fake.run_checks = lambda settings: [  # type: ignore[attr-defined]
        FakeResult("key_file", "PASS", "mode 0600"),
        FakeResult("disk", "WARN", "<b>9%</b> free", "free some space")]
    monkeypatch.setitem(sys.modules, "edge_node.ops.doctor", fake)
    client = ui_client("technician")
    assert 'id="run-doctor"' in client.get("/technician").get_data(as_text=True)
    page = post(client, "/technician").get_data(as_text=True)
    assert "key_file" in page and "free some space" in page and "&lt;b&gt;9%" in page
    assert "check-warn" in page and "check-pass" in page


def test_technician_without_doctor(ui_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the module the page still works and says so."""
    monkeypatch.setitem(sys.modules, "edge_node.ops.doctor", None)  # import raises ImportError
    page = ui_client("technician").get("/technician").get_data(as_text=True)
    assert "not installed" in page and "session_idle_minutes" in page


def test_reception_offline_says_hq_links_later(ui_client: Client, node: Node) -> None:
    """A CNIC not held here, with no link to HQ: the desk says HQ could not be asked and
    offers registration as always (in English and in Urdu)."""
    client = ui_client("reception")
    page = client.get("/reception?cnic=35202-1234567-1").get_data(as_text=True)
    assert 'id="hq-unavailable"' in page and "HQ links the records later" in page
    assert 'id="register-form"' in page
    page = client.get("/reception?cnic=35202-1234567-1&lang=ur").get_data(as_text=True)
    assert "ہیڈ آفس بعد میں ریکارڈ جوڑ دے گا" in page
