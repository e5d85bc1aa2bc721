"""The read-only JSON API (issue 11 item 6): bearer tokens, agency scope, pagination,
filters, role check, one error shape, audit, OpenAPI — Flask test client over a real
HQ store (SQLite) and the real `edge-hq api-token` commands."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from openapi_spec_validator import validate

from hq import projections
from hq.cli.main import main as hq_cli
from hq.console.app import create_app
from hq.store import utc_now
from tests.test_hq_console import PASSWORD, action_rows

AGENCIES = ("nadra", "excise")


def self_signed() -> str:
    """A throwaway certificate for a node row (the fleet view reads its expiry)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-lhr")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """A store with one node and 7 applications: 5 nadra (NADRA officer), 2 excise."""
    console = create_app(str(tmp_path / "hq" / "hq.db"), test_config={"TESTING": True})
    with console.extensions["hq_store"].use() as db, db.transaction() as tx:
        tx.execute("INSERT INTO hq_nodes (node_id, center_id, cert_pem, enrolled_at) "
                   "VALUES ('node-lhr', 'LHR-GULBERG', ?, ?)", [self_signed(), utc_now()])
        for i in range(7):
            projections.project(tx, "applications", str(uuid.uuid4()), "node-lhr", {
                "reference": f"LHR-{i:04d}", "citizen_id": str(uuid.uuid4()),
                "service_code": "cnic_renewal", "agency_code": AGENCIES[i % 2 if i < 4 else 0],
                "status": "ready" if i == 6 else "submitted",
                "created_at": f"2026-01-0{i + 1}T09:00:00.000Z"}, "0")
    yield console
    console.extensions["hq_store"].db.close()


def token_for(app: Flask, tmp_path: Path, role: str, agency: str | None = None) -> str:
    """An account of `role` and a token made with the real CLI (printed once)."""
    db = str(tmp_path / "hq" / "hq.db")
    username = role.replace("_", "-")
    runner = CliRunner()
    extra = ["--agency", agency] if agency else []
    added = runner.invoke(hq_cli, ["--db", db, "account", "add", username, "--role", role,
                                   "--password", PASSWORD, *extra])
    assert added.exit_code == 0, added.output
    made = runner.invoke(hq_cli, ["--db", db, "api-token", "create", "--account", username])
    assert made.exit_code == 0, made.output
    found = re.search(r"khq_[A-Za-z0-9_-]+", made.output)
    assert found
    return found.group(0)


def get(app: Flask, path: str, token: str | None) -> tuple[int, dict[str, object]]:
    """GET with a bearer token; status and JSON."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = app.test_client().get(path, headers=headers)
    assert response.is_json, (path, response.get_data(as_text=True)[:200])
    assert "Set-Cookie" not in response.headers
    return response.status_code, response.get_json()


def test_token_required(app: Flask, tmp_path: Path) -> None:
    for token in (None, "khq_not-a-token"):
        status, body = get(app, "/api/v1/applications", token)
        assert status == 401 and body["ok"] is False and body["status"] == 401
    token = token_for(app, tmp_path, "admin")
    assert get(app, "/api/v1/applications", token)[0] == 200
    db = str(tmp_path / "hq" / "hq.db")
    listed = CliRunner().invoke(hq_cli, ["--db", db, "api-token", "list", "--json"])
    assert token not in listed.output
    token_id = re.search(r'"token_id": "([0-9a-f]+)"', listed.output)
    assert token_id
    revoked = CliRunner().invoke(hq_cli, ["--db", db, "api-token", "revoke", token_id.group(1)])
    assert revoked.exit_code == 0, revoked.output
    assert get(app, "/api/v1/applications", token)[0] == 401


def test_agency_token_sees_own_agency_only(app: Flask, tmp_path: Path) -> None:
    token = token_for(app, tmp_path, "agency_officer", "NADRA")
    status, body = get(app, "/api/v1/applications?limit=200", token)
    assert status == 200
    items = body["items"]
    assert isinstance(items, list) and len(items) == 5
    assert {i["agency_code"] for i in items} == {"nadra"}
    assert all("citizen_id" not in i and "name" not in str(i).lower() for i in items)
    status, body = get(app, "/api/v1/applications?agency=excise", token)
    assert status == 403 and body == {"ok": False, "error": body["error"], "status": 403}
    assert get(app, "/api/v1/applications?agency=NADRA", token)[0] == 200
    status, body = get(app, "/api/v1/fleet", token)
    assert status == 403 and body["ok"] is False


def test_pagination_and_filters(app: Flask, tmp_path: Path) -> None:
    token = token_for(app, tmp_path, "admin")
    seen: list[str] = []
    path: object = "/api/v1/applications?limit=3"
    while path:
        status, body = get(app, str(path), token)
        assert status == 200
        seen += [str(i["reference"]) for i in body["items"]]  # type: ignore[attr-defined]
        path = body["next"]
    assert seen == [f"LHR-{i:04d}" for i in range(7)]
    status, body = get(app, "/api/v1/applications?status=ready", token)
    assert [i["reference"] for i in body["items"]] == ["LHR-0006"]  # type: ignore[attr-defined]
    status, body = get(app, "/api/v1/applications?since=2026-01-05T00:00:00Z&agency=nadra",
                       token)
    assert [i["reference"] for i in body["items"]] == [  # type: ignore[attr-defined]
        "LHR-0004", "LHR-0005", "LHR-0006"]
    status, body = get(app, "/api/v1/applications?center=KHI-SADDAR", token)
    assert status == 200 and body["items"] == []


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "since=yesterday",
                                   "cursor=%%%", "cursor=bm90IGpzb24"])
def test_bad_params_400(app: Flask, tmp_path: Path, query: str) -> None:
    token = token_for(app, tmp_path, "admin")
    status, body = get(app, f"/api/v1/applications?{query}", token)
    assert status == 400 and body["ok"] is False and body["status"] == 400


def test_fleet_role_check_and_errors_are_json(app: Flask, tmp_path: Path) -> None:
    fleet_token = token_for(app, tmp_path, "fleet_admin")
    status, body = get(app, "/api/v1/fleet", fleet_token)
    assert status == 200 and body["items"][0]["node_id"] == "node-lhr"  # type: ignore[index]
    assert get(app, "/api/v1/applications", fleet_token)[0] == 403
    auditor = token_for(app, tmp_path, "auditor")
    assert get(app, "/api/v1/fleet", auditor)[0] == 403
    assert get(app, "/api/v1/nothing", fleet_token) == (
        404, {"ok": False, "error": "no such resource", "status": 404})
    response = app.test_client().post("/api/v1/applications")
    assert response.status_code == 405 and response.get_json()["ok"] is False


def test_every_read_audited(app: Flask, tmp_path: Path) -> None:
    token = token_for(app, tmp_path, "agency_officer", "NADRA")
    get(app, "/api/v1/applications?status=submitted", token)
    get(app, "/api/v1/fleet", token)
    get(app, "/api/v1/applications?limit=0", token)
    reads = [r for r in action_rows(app) if r["action"] == "api_read"]
    assert {r["actor"] for r in reads} == {"agency-officer"}
    assert sorted((r["target"], r["outcome"]) for r in reads) == [
        ("/api/v1/applications", "ok"), ("/api/v1/applications", "refused 400"),
        ("/api/v1/fleet", "forbidden")]


def test_openapi_document_valid(app: Flask) -> None:
    status, body = get(app, "/api/v1/openapi.json", None)
    assert status == 200 and body["openapi"] == "3.1.0"
    validate(body)
    assert "/applications" in body["paths"] and "/fleet" in body["paths"]  # type: ignore[operator]
    assert "citizen names are not part of this API" in str(body)
