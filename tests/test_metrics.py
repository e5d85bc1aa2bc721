"""Prometheus `/metrics` on the node and at HQ, the shipped alert rules, and promtool."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.datastructures import Headers

from certs import pki
from certs.layout import NODE_CERT
from edge_node.node import Node
from edge_node.paths import sync_dir
from edge_node.replication.port import NodeOutbox
from hq.downstream import enqueue
from hq.ingest import Ingest
from hq.metrics import HQMetrics, StoreCollector
from hq.store import HQDatabase
from tests.test_hq_ingest import HQ_KEY, make_node, tickets

RULES = Path(__file__).resolve().parent.parent / "ops" / "prometheus" / "khidmat-alerts.yml"
REMOTE = {"REMOTE_ADDR": "10.20.30.40"}
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool missing: `make system-deps` installs "
                                           "Debian's prometheus package")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text, keyed by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics from loopback and parse it."""
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return samples(resp.get_data(as_text=True))


def test_node_metrics_after_requests(client: FlaskClient, login: Callable[[str], Headers],
                                     node: Node) -> None:
    """Request latency by route and status, commits, backlog and link have sane values."""
    resp = client.post("/api/visits", json={"services": ["nadra_snic_renewal"]},
                       headers=login("reception"))
    assert resp.status_code == 201
    client.get("/api/nothing-here")
    got = scrape(client)
    visit = ("khidmat_http_request_duration_seconds_count",
             (("endpoint", "/api/visits"), ("method", "POST"), ("status", "201")))
    assert got[visit] == 1
    assert got[("khidmat_http_request_duration_seconds_count",
                (("endpoint", "unmatched"), ("method", "GET"), ("status", "404")))] == 1
    assert got[("khidmat_writer_commit_duration_seconds_count", ())] >= 1
    assert got[("khidmat_writer_queue_depth", ())] == 0
    assert got[("khidmat_sync_backlog_records", ())] >= 1
    oldest = NodeOutbox(node).stats()["oldest_age_s"]  # the node's own figure, same moment
    assert abs(got[("khidmat_sync_backlog_oldest_age_seconds", ())] - oldest) < 5
    assert got[("khidmat_sync_link_state", (("state", "never-connected"),))] == 1
    assert got[("khidmat_sync_link_state", (("state", "online"),))] == 0
    assert got[("khidmat_sync_enrolled", ())] == 0
    assert not any(name == "khidmat_certificate_days_left" for name, _ in got)


def test_certificate_days_left(client: FlaskClient, node: Node) -> None:
    """An enrolled node reports the days its certificate has left."""
    ca_key, ca_cert = pki.create_ca()
    directory = sync_dir(node.settings)
    directory.mkdir(mode=0o700, exist_ok=True)
    cert = pki.issue(ca_key, ca_cert, pki.make_csr(pki.new_key(), "NMETRIC"), days=30)
    (directory / NODE_CERT).write_bytes(pki.cert_pem(cert))
    got = scrape(client)
    assert 29.9 < got[("khidmat_certificate_days_left", ())] <= 30
    assert got[("khidmat_sync_enrolled", ())] == 1


def test_metrics_refuse_a_remote_scraper_without_the_token(client: FlaskClient,
                                                          node: Node) -> None:
    """Off loopback: no token configured or a wrong one is a 403 in the API's error shape."""
    resp = client.get("/metrics", environ_base=REMOTE)
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["ok"] is False and body["status"] == 403 and "metrics_token" in body["error"]
    node.settings["metrics_token"] = "s3cret-token"
    wrong = client.get("/metrics", environ_base=REMOTE,
                       headers={"Authorization": "Bearer other"})
    assert wrong.status_code == 403
    right = client.get("/metrics", environ_base=REMOTE,
                       headers={"Authorization": "Bearer s3cret-token"})
    assert right.status_code == 200 and b"khidmat_sync_backlog_records" in right.data


def test_metrics_carry_no_path_values(client: FlaskClient, login: Callable[[str], Headers],
                                      app: Flask) -> None:
    """Labels are route templates: a CNIC in a path never reaches the exposition."""
    client.get("/api/citizens/35202-1234567-1", headers=login("reception"))
    text = client.get("/metrics").get_data(as_text=True)
    assert "35202" not in text


def test_hq_collector_reads_the_store(hq_db: HQDatabase) -> None:
    """Ingest counters and latency, quarantine by reason, node lag and pending decisions."""
    node = make_node(hq_db, "NAAAAA")
    metrics = HQMetrics()
    ingest = Ingest(hq_db, HQ_KEY)
    metrics.observe(ingest.handle("t", node.batch(tickets("NAAAAA", 1, 5)), "NAAAAA"), 0.02)
    metrics.observe(ingest.handle("t", b"garbage", "NAAAAA"), 0.001)
    enqueue(hq_db, "decision", {"reference": "APP-1", "status": "approved"}, "NAAAAA")
    metrics.registry.register(StoreCollector(hq_db))
    got = samples(generate_latest(metrics.registry).decode())
    assert got[("khidmat_hq_ingest_records_total", ())] == 5
    assert got[("khidmat_hq_ingest_batches_total", (("outcome", "applied"),))] == 1
    assert got[("khidmat_hq_ingest_batches_total", (("outcome", "quarantined"),))] == 1
    assert got[("khidmat_hq_apply_duration_seconds_count", ())] == 2
    assert sum(v for (name, _), v in got.items()
               if name == "khidmat_hq_quarantine_records") == 1
    assert got[("khidmat_hq_node_acked_seq", (("node", "NAAAAA"),))] == 5
    assert 0 <= got[("khidmat_hq_node_last_seen_age_seconds", (("node", "NAAAAA"),))] < 60
    assert got[("khidmat_hq_node_downstream_pending", (("node", "NAAAAA"),))] == 1
    assert got[("khidmat_hq_decisions_pending", ())] == 1


@pytest.mark.tools
@needs_promtool
def test_promtool_checks_the_alert_rules() -> None:
    """The shipped rules parse and their expressions are valid PromQL."""
    run = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.tools
@needs_promtool
def test_promtool_lints_the_node_and_hq_metrics(client: FlaskClient,
                                                 login: Callable[[str], Headers],
                                                 tmp_path: Path) -> None:
    """`promtool check metrics` finds no problem in either exposition."""
    client.post("/api/visits", json={"services": ["nadra_snic_renewal"]},
                headers=login("reception"))
    metrics = HQMetrics(str(tmp_path / "hq.db"))
    try:
        hq_text = generate_latest(metrics.registry).decode()
    finally:
        metrics.close()
    for text in (client.get("/metrics").get_data(as_text=True), hq_text):
        run = subprocess.run(["promtool", "check", "metrics"], input=text,
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
