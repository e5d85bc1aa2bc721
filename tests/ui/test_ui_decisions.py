"""The back office's decision at the center: on the applications screen and on the
citizen's printed receipt (English and Urdu), with its reason."""

from __future__ import annotations

import html
from collections.abc import Callable

from flask.testing import FlaskClient

from edge_node.domain import applications
from edge_node.node import Node
from tests.helpers import decide
from tests.test_decisions import new_application

Client = Callable[[str | None], FlaskClient]
REASON = "Fee challan PSID-123 not paid"


def page(client: FlaskClient, url: str) -> str:
    """A page's HTML (200)."""
    resp = client.get(url)
    assert resp.status_code == 200, resp.status_code
    return html.unescape(resp.get_data(as_text=True))


def test_screen_shows_the_decision_and_its_reason(ui_client: Client, node: Node) -> None:
    """A rejection from HQ: status, decision time and reason on the list, in both languages;
    the supervisor is offered only the center's moves (collected), never ready/rejected."""
    ref = new_application(node, "in_review")
    assert decide(node, ref, "rejected", REASON) is None
    supervisor = ui_client("supervisor")
    english = page(supervisor, f"/applications?reference={ref}&lang=en")
    row = english.split(f'data-reference="{ref}"')[1].split("</tr>")[0]
    assert "Rejected" in row and "Decision of the back office" in row
    assert f"Reason: <bdi>{REASON}</bdi>" in row
    options = [o.split('"')[1] for o in row.split('<option value=')[1:]]
    assert options == ["collected"]
    urdu = page(supervisor, f"/applications?reference={ref}&lang=ur")
    assert "دفتر کا فیصلہ" in urdu and f"وجہ: <bdi>{REASON}</bdi>" in urdu
    fresh = new_application(node)
    row = page(supervisor, f"/applications?reference={fresh}").split("</tr>")[1]
    assert [o.split('"')[1] for o in row.split('<option value=')[1:]] == [
        "in_review", "collected"]
    assert "Decision of the back office" not in row and "Reason:" not in row


def test_receipt_prints_the_decision_in_english_and_urdu(ui_client: Client, node: Node) -> None:
    """The citizen's receipt: reference, status and the decision's reason in both languages,
    whatever the screen's language; before a decision, no decision line."""
    ref = new_application(node, "in_review")
    app_id = applications.get_by_reference(node.reader(), ref)["id"]
    reception = ui_client("reception")
    before = page(reception, f"/applications/{app_id}/receipt")
    assert ref in before and "In review" in before and "زیر غور" in before
    assert 'id="receipt-decision"' not in before and 'id="receipt-reason"' not in before
    assert decide(node, ref, "rejected", REASON) is None
    for lang in ("en", "ur"):
        text = page(reception, f"/applications/{app_id}/receipt?lang={lang}")
        receipt = text.split('id="receipt"')[1].split("</article>")[0]
        assert ref in receipt and "Application receipt" in receipt and "درخواست کی رسید" in \
            receipt
        status = receipt.split('id="receipt-status"')[1].split("</p>")[0]
        assert "Rejected" in status and "مسترد" in status
        reason = receipt.split('id="receipt-reason"')[1].split("</p>")[0]
        assert "Reason" in reason and "وجہ" in reason and REASON in reason
        assert "دفتر کا فیصلہ" in receipt.split('id="receipt-decision"')[1]
    assert ui_client("kiosk").get(f"/applications/{app_id}/receipt").status_code in (302, 403)
    assert reception.get("/applications/nope/receipt").status_code == 404
