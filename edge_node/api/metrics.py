"""Prometheus `/metrics` of the node: request latency, the writer, the sync backlog and link,
and the days left on the node's certificate.

Prometheus scrapes without a browser session, so `/metrics` has its own rule: a scraper on
loopback is served; any other needs `Authorization: Bearer <metrics_token>` (no token set:
loopback only). A refusal has the API's error shape. Labels carry route templates, methods
and status codes only, never a path's values: no PII leaves the node this way.

Each app has its own CollectorRegistry (tests build many apps in one process); sync and
certificate figures are read at scrape time, so they are never stale.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from cryptography import x509
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from werkzeug.wrappers import Response as BaseResponse

from certs.layout import NODE_CERT
from edge_node import lifecycle
from edge_node.errors import ForbiddenError
from edge_node.node import Node
from edge_node.paths import sync_dir
from edge_node.replication.status import sync_status

PATH = "/metrics"
LINK_STATES = ("online", "offline", "never-connected")
# Request latency buckets, in seconds: a counter screen wants well under 100 ms.
REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Group commit: one fsync, normally a few milliseconds.
COMMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SECONDS_PER_DAY = 86400.0


class NodeCollector(Collector):
    """Figures read when Prometheus scrapes: writer queue, sync backlog, link, certificate."""

    def __init__(self, app: Flask) -> None:
        """Read from `app`'s node and agent."""
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """One sample of every scrape-time family."""
        running = lifecycle.running(self.app)
        yield GaugeMetricFamily("khidmat_writer_queue_depth",
                                "Writes queued for the single writer thread.",
                                value=running.node.writer.queue_depth())
        yield from _sync_families(running)
        days = certificate_days_left(running.node)
        if days is not None:
            yield GaugeMetricFamily("khidmat_certificate_days_left",
                                    "Days until the node's sync certificate expires "
                                    "(negative: expired).", value=days)


def _sync_families(running: lifecycle.Running) -> Iterator[Metric]:
    """Backlog, oldest unsent age, link state and enrolment from `sync_status`."""
    status = sync_status(running.node, running.agent)
    yield GaugeMetricFamily("khidmat_sync_backlog_records",
                            "Records HQ has not acknowledged.", value=status.count)
    yield GaugeMetricFamily("khidmat_sync_backlog_oldest_age_seconds",
                            "Age of the oldest record HQ has not acknowledged (0: none).",
                            value=status.oldest_age_s or 0.0)
    yield GaugeMetricFamily("khidmat_sync_enrolled", "1 when the node holds a sync "
                            "certificate.", value=1.0 if status.enrolled else 0.0)
    link = GaugeMetricFamily("khidmat_sync_link_state", "1 for the link's current state "
                             "(online, offline, never-connected).", labels=["state"])
    for state in LINK_STATES:
        link.add_metric([state], 1.0 if status.link == state else 0.0)
    yield link


def certificate_days_left(node: Node) -> float | None:
    """Days until the node certificate's notAfter; None when not enrolled or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate((sync_dir(node.settings) / NODE_CERT).read_bytes())
    except (OSError, ValueError):
        return None
    left = cert.not_valid_after_utc - datetime.now(UTC)
    return round(left.total_seconds() / SECONDS_PER_DAY, 3)


class NodeMetrics:
    """One app's registry and the instruments its hooks feed."""

    def __init__(self, app: Flask) -> None:
        """Create the registry, the histograms and the scrape-time collector."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram("khidmat_http_request_duration_seconds",
                                  "Time to answer an HTTP request, by route and status.",
                                  ["endpoint", "method", "status"], registry=self.registry,
                                  buckets=REQUEST_BUCKETS_S)
        self.commits = Histogram("khidmat_writer_commit_duration_seconds",
                                 "Time from BEGIN to COMMIT of one write group.",
                                 registry=self.registry, buckets=COMMIT_BUCKETS_S)
        self.registry.register(NodeCollector(app))

    def observe_commit(self, seconds: float, jobs: int) -> None:
        """Writer hook: one committed group."""
        self.commits.observe(seconds)


def init_app(app: Flask) -> None:
    """Register `/metrics`, the request timing hooks and the writer's commit listener."""
    metrics = NodeMetrics(app)
    app.extensions["khidmat_metrics"] = metrics
    writer = lifecycle.running(app).node.writer
    writer.commit_listeners.append(metrics.observe_commit)
    lifecycle.on_stop(app, "metrics", lambda: _forget(writer.commit_listeners, metrics))
    app.before_request(_start_timer)
    app.after_request(_record(metrics))
    app.add_url_rule(PATH, "metrics", _serve(app, metrics), methods=["GET"])


def _forget(listeners: list[Callable[[float, int], None]], metrics: NodeMetrics) -> None:
    """Stop feeding a stopped app's histogram."""
    if metrics.observe_commit in listeners:
        listeners.remove(metrics.observe_commit)


def _start_timer() -> None:
    """Note when the request began."""
    g.metrics_started = time.perf_counter()


def _record(metrics: NodeMetrics) -> Callable[[BaseResponse], BaseResponse]:
    """An after_request hook observing the request's latency under its route template."""
    def record(response: BaseResponse) -> BaseResponse:
        started = g.get("metrics_started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.requests.labels(endpoint, request.method,
                                    str(response.status_code)).observe(
                time.perf_counter() - started)
        return response
    return record


def _serve(app: Flask, metrics: NodeMetrics) -> Callable[[], Response]:
    """The `/metrics` view: the exposition text; a refusal is a ForbiddenError, which the
    API's error handler answers in its one error shape."""
    def view() -> Response:
        if not allowed(request.remote_addr, request.headers.get("Authorization", ""),
                       lifecycle.running(app).node.settings["metrics_token"]):
            raise ForbiddenError("metrics are served to loopback or with the metrics "
                                 "token (setting metrics_token)")
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)
    return view


def allowed(remote_addr: str | None, authorization: str, token: str) -> bool:
    """Loopback always; elsewhere only with `Bearer <token>` and a token configured."""
    if _is_loopback(remote_addr):
        return True
    if not token:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def _is_loopback(remote_addr: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (and IPv4-mapped loopback)."""
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)
