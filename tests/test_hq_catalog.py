"""HQ console service catalog (issue 11 item 5): edit the draft (validated), publish the
next version to all or chosen centers, and see which version each node runs (acks and
refusals)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hq.console.app import create_app
from hq.downstream import enqueue
from hq.store import utc_now
from tests.test_hq_console import action_rows, csrf, signed_in

PAGE = "/catalog/"
SEED = Path(__file__).resolve().parents[1] / "edge_node" / "data" / "catalog.json"


@pytest.fixture
def catalog_app(tmp_path: Path) -> Iterator[Flask]:
    """A fresh store with N1, N2 at ISB-01, N3 at LHR-01, that was sent the seed catalog."""
    console = create_app(str(tmp_path / "hq.db"), test_config={"TESTING": True})
    with console.extensions["hq_store"].use() as db:
        with db.transaction() as tx:
            for node, center in (("N1", "ISB-01"), ("N2", "ISB-01"), ("N3", "LHR-01")):
                tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, enrolled_at) "
                           "VALUES (?, ?, 'pem', ?)", [node, center, utc_now()])
        enqueue(db, "catalog", json.loads(SEED.read_text("utf-8")))
    yield console
    console.extensions["hq_store"].db.close()


def catalog_items(app: Flask) -> list[tuple[str, int, dict[str, Any]]]:
    """(node, seq, catalog) of every queued catalog item."""
    with app.extensions["hq_store"].use() as db:
        rows = db.execute("SELECT node_id, seq, payload FROM hq_down WHERE kind = 'catalog' "
                          "ORDER BY node_id, seq").fetchall()
    return [(r[0], int(r[1]), json.loads(r[2])) for r in rows]


def imported(client: FlaskClient) -> None:
    """Import the newest sent catalog into the draft."""
    response = client.post(f"{PAGE}import", data={"csrf_token": csrf(client, PAGE)})
    assert response.status_code == 200, response.get_data(as_text=True)


def edit(client: FlaskClient, **changes: str) -> Any:
    """POST the edit form for nadra_new_snic with `changes`."""
    data = {"csrf_token": csrf(client, PAGE), "code": "nadra_new_snic",
            "agency_code": "nadra", "name_en": "New smart NIC", "name_ur": "نیا کارڈ",
            "standard_minutes": "25", "fee_pkr": "900", "documents": "b_form\r\nfee_challan",
            "active": "1", **changes}
    return client.post(f"{PAGE}service", data=data)


def service(catalog: dict[str, Any], code: str) -> dict[str, Any] | None:
    """One service of a catalog by code."""
    found = [s for a in catalog["agencies"] for s in a["services"] if s["code"] == code]
    return found[0] if found else None


@pytest.mark.parametrize(("field", "value"), [
    ("name_en", " "), ("name_ur", ""), ("standard_minutes", "0"),
    ("standard_minutes", "481"), ("standard_minutes", "ten"), ("fee_pkr", "-1"),
    ("documents", "no_such_document"), ("agency_code", "nope"), ("code", "Bad Code")])
def test_edit_validates(catalog_app: Flask, field: str, value: str) -> None:
    client = signed_in(catalog_app, "fleet_admin")
    imported(client)
    response = edit(client, **{field: value})
    assert response.status_code == 400 and 'id="catalog-error"' in response.get_data(as_text=True)
    with catalog_app.extensions["hq_store"].use() as db:
        row = db.execute("SELECT standard_minutes, fee_pkr FROM hq_catalog_services "
                         "WHERE code = 'nadra_new_snic'").fetchone()
    assert tuple(row) == (20, 750)  # nothing changed
    assert action_rows(catalog_app)[0]["outcome"] == "refused"


def test_publish_to_chosen_centers_sends_the_next_version(catalog_app: Flask) -> None:
    client = signed_in(catalog_app, "admin")
    imported(client)
    assert edit(client).status_code == 200
    response = client.post(f"{PAGE}publish", data={"csrf_token": csrf(client, PAGE),
                                                   "scope": "chosen", "center": "ISB-01"})
    assert response.status_code == 200, response.get_data(as_text=True)
    new = [(node, c) for node, _, c in catalog_items(catalog_app) if c["catalog_version"] == 2]
    assert sorted(node for node, _ in new) == ["N1", "N2"]  # not LHR-01's N3
    seed = json.loads(SEED.read_text("utf-8"))
    for _, sent in new:
        assert set(sent) == set(seed)
        snic = service(sent, "nadra_new_snic")
        assert snic is not None and snic["standard_minutes"] == 25
        assert snic["name_ur"] == "نیا کارڈ" and snic["documents"] == ["b_form", "fee_challan"]
        assert snic["fees"][0]["amount_pkr"] == 900 and len(snic["fees"]) == 3
        assert sent["documents"] == seed["documents"]
    row = action_rows(catalog_app)[0]
    assert (row["action"], row["target"]) == ("publish_catalog", "ISB-01")
    assert "version 2" in str(row["detail"])


def test_inactive_service_is_left_out(catalog_app: Flask) -> None:
    client = signed_in(catalog_app, "fleet_admin")
    imported(client)
    assert edit(client, active="").status_code == 200
    client.post(f"{PAGE}publish", data={"csrf_token": csrf(client, PAGE), "scope": "all"})
    new = [c for _, _, c in catalog_items(catalog_app) if c["catalog_version"] == 2]
    assert len(new) == 3 and all(service(c, "nadra_new_snic") is None for c in new)


def test_versions_table_shows_pending_applied_refused(catalog_app: Flask) -> None:
    client = signed_in(catalog_app, "admin")
    imported(client)
    client.post(f"{PAGE}publish", data={"csrf_token": csrf(client, PAGE), "scope": "all"})
    seqs = {(node, c["catalog_version"]): seq for node, seq, c in catalog_items(catalog_app)}
    with catalog_app.extensions["hq_store"].use() as db, db.transaction() as tx:
        tx.execute("UPDATE hq_nodes SET down_acked = ? WHERE node_id = 'N1'", [seqs["N1", 2]])
        tx.execute("UPDATE hq_nodes SET down_acked = ? WHERE node_id = 'N2'", [seqs["N2", 2]])
        tx.execute("INSERT INTO hq_down_refused (node_id, seq, kind, subject, reason, detail, "
                   "reported_at) VALUES ('N2', ?, 'catalog', '2', 'invalid', 'bad doc', ?)",
                   [seqs["N2", 2], utc_now()])
        tx.execute("UPDATE hq_nodes SET down_acked = ? WHERE node_id = 'N3'", [seqs["N3", 1]])
    reader = signed_in(catalog_app, "monitoring_officer")
    body = reader.get(PAGE).get_data(as_text=True)
    rows = dict(re.findall(r'<tr data-node="(N\d)">(.*?)</tr>', body, re.S))
    assert 'class="applied">2<' in rows["N1"] and "Applied" in rows["N1"]
    assert 'class="applied">1<' in rows["N2"] and "Refused" in rows["N2"]
    assert "invalid" in rows["N2"]
    assert 'class="applied">1<' in rows["N3"] and "Pending" in rows["N3"]
    assert 'id="publish-form"' not in body  # a reader gets no forms


def test_readers_cannot_post(catalog_app: Flask) -> None:
    for role in ("auditor", "monitoring_officer"):
        client = signed_in(catalog_app, role)
        assert client.get(PAGE).status_code == 200
        token = csrf(client, "/")
        for path in ("import", "service", "publish"):
            response = client.post(f"{PAGE}{path}", data={"csrf_token": token, "scope": "all"})
            assert response.status_code == 403
    assert [c for _, _, c in catalog_items(catalog_app) if c["catalog_version"] > 1] == []


def test_nothing_sent_yet_offers_import_and_refuses(tmp_path: Path) -> None:
    console = create_app(str(tmp_path / "hq.db"), test_config={"TESTING": True})
    try:
        client = signed_in(console, "admin")
        assert 'id="import-form"' in client.get(PAGE).get_data(as_text=True)
        response = client.post(f"{PAGE}import", data={"csrf_token": csrf(client, PAGE)})
        assert response.status_code == 400
        response = client.post(f"{PAGE}publish", data={"csrf_token": csrf(client, PAGE),
                                                       "scope": "all"})
        assert response.status_code == 400
    finally:
        console.extensions["hq_store"].db.close()


def test_catalog_screen_in_urdu(catalog_app: Flask) -> None:
    client = signed_in(catalog_app, "admin")
    body = client.get(f"{PAGE}?lang=ur").get_data(as_text=True)
    assert "خدمات کی فہرست" in body and "موجودہ فہرست درآمد کریں" in body
