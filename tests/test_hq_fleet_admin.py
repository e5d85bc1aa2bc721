"""HQ console fleet administration (issue 11 item 4): enroll a node from an uploaded request
(digest checked, bundle downloaded), revoke with a reason, quarantine and conflicts lists —
Flask test client over a real HQ store, a real CA and a real enrollment request."""

from __future__ import annotations

import getpass
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from certs.authority import init_authority, open_authority
from certs.enroll import fingerprint, install, make_request, request_digest
from hq.cli.main import main as hq_cli
from hq.console.app import create_app
from hq.ingest import Rejected, quarantine
from tests.test_hq_console import action_rows, csrf, signed_in
from tests.tls_broker import free_port

CENTER = "ISB-01"
PAGE = "/fleet/admin/"


@pytest.fixture
def admin_app(tmp_path: Path) -> Iterator[Flask]:
    """The console over a fresh SQLite store and a fresh CA."""
    init_authority(tmp_path / "keys", ["localhost"])
    console = create_app(str(tmp_path / "hq.db"), test_config={"TESTING": True},
                         keys_dir=str(tmp_path / "keys"))
    yield console
    console.extensions["hq_store"].db.close()


def enrollment_request(tmp_path: Path, node_id: str = "NFA0001") -> dict[str, Any]:
    """A real node's enrollment request (its keys made under tmp_path)."""
    sync_dir = tmp_path / f"node-{node_id}"
    sync_dir.mkdir()
    return make_request(sync_dir, node_id, CENTER)


def enroll(client: FlaskClient, body: bytes, digest: str, center: str = CENTER,
           host: str = "localhost") -> Any:
    """POST the enrollment form with `body` as the uploaded file."""
    return client.post(f"{PAGE}enroll", content_type="multipart/form-data", data={
        "csrf_token": csrf(client, PAGE), "digest": digest, "center_id": center,
        "broker_host": host, "broker_port": "8883",
        "request": (io.BytesIO(body), "enroll-request.json")})


def nodes(app: Flask) -> dict[str, int]:
    """node id → revoked flag, as registered at HQ."""
    with app.extensions["hq_store"].use() as db:
        return {row[0]: row[1] for row in
                db.execute("SELECT node_id, revoked FROM hq_nodes").fetchall()}


def test_upload_request_downloads_bundle_and_registers_node(admin_app: Flask,
                                                             tmp_path: Path) -> None:
    client = signed_in(admin_app, "fleet_admin")
    request = enrollment_request(tmp_path)
    digest = request_digest(request)
    spoken = " ".join(digest[i:i + 4] for i in range(0, 16, 4)).upper()  # as read out
    response = enroll(client, json.dumps(request).encode(), spoken)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "enroll-NFA0001.bundle.json" in response.headers["Content-Disposition"]
    bundle = json.loads(response.get_data())
    assert bundle["center_id"] == CENTER and bundle["broker"]["host"] == "localhost"
    ca = fingerprint(open_authority(tmp_path / "keys").ca_cert)
    install(tmp_path / "node-NFA0001", bundle, ca, "NFA0001")  # the node accepts it
    assert nodes(admin_app) == {"NFA0001": 0}
    row = action_rows(admin_app)[0]
    assert (row["action"], row["target"], row["actor"]) == ("enroll_node", "NFA0001",
                                                           "fleet-admin")
    assert digest in str(row["detail"]) and row["outcome"] == "no_broker_recorded"


@pytest.mark.parametrize(("body", "digest", "message"), [
    (None, "0000000000000000", "not the one the technician read out"),
    (b"not json {", "0000000000000000", "not an enrollment request"),
    (b"[1, 2]", "0000000000000000", "not an enrollment request"),
])
def test_wrong_digest_or_malformed_file_registers_nothing(
        admin_app: Flask, tmp_path: Path, body: bytes | None, digest: str, message: str) -> None:
    client = signed_in(admin_app, "admin")
    request = enrollment_request(tmp_path)
    response = enroll(client, body or json.dumps(request).encode(), digest)
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and message in page
    if body is None:
        assert request_digest(request) in page  # the right digest, to compare by phone
    assert nodes(admin_app) == {}
    assert action_rows(admin_app)[0]["outcome"] == "refused"


def test_malformed_request_and_wrong_center_register_nothing(admin_app: Flask,
                                                             tmp_path: Path) -> None:
    client = signed_in(admin_app, "fleet_admin")
    request = enrollment_request(tmp_path)
    broken = {**request, "csr": "garbage"}
    response = enroll(client, json.dumps(broken).encode(), request_digest(broken))
    assert response.status_code == 400 and "nothing was signed" in response.get_data(True)
    response = enroll(client, json.dumps(request).encode(), request_digest(request),
                      center="LHR-02")
    assert response.status_code == 400 and "not LHR-02" in response.get_data(as_text=True)
    response = enroll(client, json.dumps(request).encode(), request_digest(request),
                      host="mqtt.elsewhere.example")
    assert response.status_code == 400 and "broker certificate" in response.get_data(True)
    assert nodes(admin_app) == {}


def test_revoke_needs_a_reason_then_crl_audit_and_broker_unreachable(
        admin_app: Flask, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = CliRunner().invoke(hq_cli, [  # a broker directory whose broker is not running
        "--db", str(tmp_path / "hq.db"), "broker-config", "--keys", str(keys), "--out",
        str(tmp_path / "broker"), "--port", str(free_port()), "--bind", "127.0.0.1",
        "--hq-port", str(free_port()), "--run-as", getpass.getuser()])
    assert result.exit_code == 0, result.output
    client = signed_in(admin_app, "fleet_admin")
    request = enrollment_request(tmp_path)
    assert enroll(client, json.dumps(request).encode(), request_digest(request)).status_code \
        == 200
    token = csrf(client, PAGE)
    response = client.post(f"{PAGE}revoke", data={"csrf_token": token, "node_id": "NFA0001",
                                                  "reason": "  "})
    assert response.status_code == 400 and "reason" in response.get_data(as_text=True)
    assert nodes(admin_app) == {"NFA0001": 0} and open_authority(keys).revoked() == []
    response = client.post(f"{PAGE}revoke", data={"csrf_token": token, "node_id": "NFA0001",
                                                  "reason": "laptop stolen from center"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "is revoked" in page
    assert "was not changed (unreachable)" in page and "restart the broker" in page
    assert nodes(admin_app) == {"NFA0001": 1} and len(open_authority(keys).revoked()) == 1
    assert (tmp_path / "broker" / "crl.pem").read_bytes() == (keys / "crl.pem").read_bytes()
    row = action_rows(admin_app)[0]
    assert (row["action"], row["target"], row["outcome"]) == ("revoke_node", "NFA0001",
                                                             "broker_not_changed")
    assert "laptop stolen from center" in str(row["detail"])
    again = client.post(f"{PAGE}revoke", data={"csrf_token": token, "node_id": "NFA0001",
                                               "reason": "twice"})
    assert again.status_code == 400 and "already revoked" in again.get_data(as_text=True)


def test_readers_see_lists_but_cannot_act(admin_app: Flask, tmp_path: Path) -> None:
    with admin_app.extensions["hq_store"].use() as db:
        quarantine(db, "nodes/NX/up", b"junk", Rejected("bad_signature", "no valid sig", "NX"))
    for role in ("monitoring_officer", "auditor"):
        client = signed_in(admin_app, role)
        page = client.get(PAGE).get_data(as_text=True)
        assert "bad_signature" in page and 'id="conflicts"' not in page
        assert "enroll-form" not in page and "revoke-form" not in page
        request = enrollment_request(tmp_path, f"N{role[:4].upper()}")
        assert enroll(client, json.dumps(request).encode(),
                      request_digest(request)).status_code == 403
    assert nodes(admin_app) == {}
    urdu = signed_in(admin_app, "admin").get(f"{PAGE}?lang=ur").get_data(as_text=True)
    assert 'dir="rtl"' in urdu and "enroll-form" in urdu and "فلیٹ کا انتظام" in urdu
