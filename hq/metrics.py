"""Prometheus metrics of `edge-hq serve`: ingest rate and apply latency from the workers,
and, read from the store at scrape time, quarantine, lag per node and decisions pending.

`edge-hq serve --metrics-port P` serves them at `http://<metrics-host>:P/metrics` with
prometheus_client's own HTTP server (loopback by default). Labels hold node ids and
quarantine reasons only: no citizen data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hq.ingest import Outcome
from hq.store import HQDatabase

# Applying one batch is one transaction: milliseconds, seconds when PostgreSQL is loaded.
APPLY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DEFAULT_METRICS_HOST = "127.0.0.1"


class StoreCollector(Collector):
    """Gauges read from the HQ store on each scrape, over a connection of its own."""

    def __init__(self, db: HQDatabase, now: float | None = None) -> None:
        """Read from `db` (only this collector uses it); `now` fixes the clock in tests."""
        self.db = db
        self.now = now
        self._lock = threading.Lock()  # scrapes may overlap; one connection

    def collect(self) -> Iterator[Metric]:
        """Quarantine by reason, each node's lag and the decisions not yet acknowledged."""
        with self._lock:
            quarantine = self.db.execute("SELECT reason, count(*) FROM hq_quarantine "
                                         "GROUP BY reason").fetchall()
            nodes = self.db.execute("SELECT node_id, acked_seq, last_seen, down_seq, "
                                    "down_acked FROM hq_nodes WHERE revoked = 0").fetchall()
            pending = self.db.execute(
                "SELECT count(*), min(d.created_at) FROM hq_decisions d JOIN hq_nodes n "
                "ON d.node_id = n.node_id WHERE d.seq > n.down_acked").fetchone()
        now = self.now if self.now is not None else time.time()
        family = GaugeMetricFamily("khidmat_hq_quarantine_records",
                                   "Payloads held in quarantine, by reason.", labels=["reason"])
        for reason, count in quarantine:
            family.add_metric([str(reason)], float(count))
        yield family
        yield from _node_families(nodes, now)
        yield GaugeMetricFamily("khidmat_hq_decisions_pending",
                                "Decisions queued to nodes and not yet acknowledged.",
                                value=float(pending[0]))
        yield GaugeMetricFamily("khidmat_hq_decisions_pending_oldest_age_seconds",
                                "Age of the oldest unacknowledged decision (0: none).",
                                value=_age(pending[1], now) or 0.0)


def _node_families(nodes: list[tuple[object, ...]], now: float) -> Iterator[Metric]:
    """Per enrolled node: seconds since last heard, acked seq, downstream not acked."""
    seen = GaugeMetricFamily("khidmat_hq_node_last_seen_age_seconds",
                             "Seconds since HQ last heard from the node (batch or status).",
                             labels=["node"])
    acked = GaugeMetricFamily("khidmat_hq_node_acked_seq",
                              "Highest upstream seq HQ applied for the node.", labels=["node"])
    down = GaugeMetricFamily("khidmat_hq_node_downstream_pending",
                             "Downstream items the node has not acknowledged.", labels=["node"])
    for node_id, acked_seq, last_seen, down_seq, down_acked in nodes:
        age = _age(last_seen, now)
        if age is not None:
            seen.add_metric([str(node_id)], age)
        acked.add_metric([str(node_id)], float(str(acked_seq)))
        down.add_metric([str(node_id)], float(str(down_seq)) - float(str(down_acked)))
    yield from (seen, acked, down)


def _age(stamp: object, now: float) -> float | None:
    """Seconds from a stored UTC timestamp to `now`; None when absent or unreadable."""
    if not isinstance(stamp, str):
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(stamp).timestamp())
    except ValueError:
        return None


class HQMetrics:
    """The serve process's registry: worker counters plus the store collector."""

    def __init__(self, db_url: str | None = None) -> None:
        """Create the instruments; with `db_url`, also the store-derived gauges."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.batches = Counter("khidmat_hq_ingest_batches", "Upstream envelopes handled, by "
                               "outcome (applied or quarantined).", ["outcome"],
                               registry=self.registry)
        self.records = Counter("khidmat_hq_ingest_records", "Records applied to the HQ store.",
                               registry=self.registry)
        self.apply_seconds = Histogram("khidmat_hq_apply_duration_seconds",
                                       "Time to check and apply one upstream envelope.",
                                       registry=self.registry, buckets=APPLY_BUCKETS_S)
        self.store: HQDatabase | None = None
        self._server: Any = None
        if db_url is not None:
            self.store = HQDatabase(db_url)
            self.registry.register(StoreCollector(self.store))

    def observe(self, outcome: Outcome, seconds: float) -> None:
        """One envelope handled by a worker."""
        self.apply_seconds.observe(seconds)
        self.batches.labels("quarantined" if outcome.quarantined else "applied").inc()
        self.records.inc(outcome.applied)

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> None:
        """Serve `/metrics` on host:port from a daemon thread."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        """Stop serving and close the collector's store connection."""
        if self._server is not None:
            self._server.shutdown()
        if self.store is not None:
            self.store.close()
