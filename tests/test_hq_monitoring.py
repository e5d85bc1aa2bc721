"""National monitoring (issue 11 item 2): every center from the projections and the
nodes' live summaries; offline centers show their last known state and age only."""

from __future__ import annotations

import json
from pathlib import Path

from hq.console import demo
from hq.console.app import create_app
from hq.store import HQDatabase
from tests.test_hq_console import signed_in


def demo_app(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A console over a demo-filled store."""
    url = str(tmp_path / "hq" / "hq.db")
    db = HQDatabase(url)
    demo.fill(db)
    db.close()
    return create_app(url, test_config={"TESTING": True})


def test_screen_shows_demo_centers_from_projections(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    page = signed_in(app, "monitoring_officer").get("/monitoring/").get_data(as_text=True)
    for center in {c for _, c, *_ in demo.NODES}:
        assert center in page
    row = page.split("LHR-GULBERG")[2].split("</tr>")[0]
    assert "<td>2</td>" in row  # one waiting ticket from each of the two LHR nodes
    assert "<td>4</td>" in row  # two done tickets from each
    app.extensions["hq_store"].db.close()


def test_offline_center_shows_last_known_state_and_age(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    client = signed_in(app, "auditor")
    row = client.get("/monitoring/table").get_data(as_text=True).split("KHI-SADDAR")[2]
    row = row.split("</tr>")[0]
    assert "last known at" in row and "(95 min ago)" in row
    assert "offline" in row
    longest = row.split("<td>")[3]
    assert longest.startswith("—")  # no wait invented for a center we cannot see
    app.extensions["hq_store"].db.close()


def test_live_summary_overlays_and_drill_down(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with app.extensions["hq_store"].use() as db, db.transaction() as tx:
        status = json.loads(tx.execute("SELECT status FROM hq_nodes WHERE node_id = "
                                       "'demo-isb-01'").fetchone()[0])
        today = tx.execute("SELECT business_date FROM hq_tickets LIMIT 1").fetchone()[0]
        status["live"] = {"waiting": 17, "longest_wait_s": 1500, "now_serving": ["B042"],
                          "counters_open": 3, "breaches": 5, "served": 99,
                          "mean_rating": 4.25, "standards": {"cnic_renewal": 15},
                          "business_date": today}
        tx.execute("UPDATE hq_nodes SET status = ? WHERE node_id = 'demo-isb-01'",
                   [json.dumps(status)])
    client = signed_in(app, "admin")
    row = client.get("/monitoring/").get_data(as_text=True).split("ISB-G9")[2]
    row = row.split("</tr>")[0]
    for shown in ("B042", "<td>17</td>", "25 min", "bad\">5</td>", "<td>99</td>", "4.25"):
        assert shown in row, shown
    detail = client.get("/monitoring/center/ISB-G9")
    assert detail.status_code == 200
    body = detail.get_data(as_text=True)
    assert 'id="hours"' in body and 'id="services"' in body and 'id="comments"' in body
    assert client.get("/monitoring/center/NOPE").status_code == 404
    urdu = client.get("/monitoring/?lang=ur").get_data(as_text=True)
    assert 'dir="rtl"' in urdu and "قومی نگرانی" in urdu
    app.extensions["hq_store"].db.close()


def test_fleet_admin_and_agency_officer_cannot_monitor(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    for role in ("fleet_admin", "agency_officer"):
        assert signed_in(app, role).get("/monitoring/").status_code == 403
    app.extensions["hq_store"].db.close()
