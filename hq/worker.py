"""An HQ ingest worker: shared subscription in, acks and downstream out.

Several workers can run against one broker: `$share/hq/...` hands each
upstream message to one of them. A worker applies the batch (one transaction)
and only then publishes the node's cumulative ack; if it dies first, the node
times out and sends again, and the replay is applied zero more times.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

from certs.authority import AuthorityError, open_authority
from hq.downstream import DownPacer, ack_envelope, pending_envelope
from hq.enrollment import renew
from hq.ingest import Ingest
from hq.metrics import HQMetrics
from hq.resume import resume_ack_envelope
from hq.store import HQDatabase, utc_now
from sync import topics
from sync.identity import HQIdentity
from sync.transport import LinkConfig, MqttLink

log = logging.getLogger(__name__)
QUEUE_MAX = 1000


class Worker:
    """Consumes upstream envelopes from the broker and applies them to the HQ store."""

    def __init__(self, db_url: str, identity: HQIdentity, host: str, port: int,
                 worker_id: str = "hq-1", metrics: HQMetrics | None = None) -> None:
        """Open the store and prepare the link (connects on `start`); `metrics` counts
        what is applied and how long it takes."""
        self.metrics = metrics
        self.db = HQDatabase(db_url)
        self.identity = identity
        self.ingest = Ingest(self.db, identity.hpke_private, renewer=self._renewer())
        self.link = MqttLink(LinkConfig(
            client_id=worker_id, host=host, port=port, cafile=identity.cafile,
            certfile=identity.certfile, keyfile=identity.keyfile,
            subscriptions=[(topics.HQ_UP_SUBSCRIPTION, 1), (topics.HQ_STATUS_SUBSCRIPTION, 1)],
            # No session outlives the connection: a dead worker's shared subscription would
            # keep taking its turn of every node's batches (queued, unacked) for days.
            clean_start=True, session_expiry_s=0),
            self._on_message)
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE_MAX)
        self._thread = threading.Thread(target=self._run, name=f"{worker_id}-apply",
                                        daemon=True)
        self.handled = 0
        self.down_pacer = DownPacer()
        self._online: dict[str, bool] = {}

    def _renewer(self) -> Any:
        """Certificate renewal, when this worker's key directory holds the CA."""
        try:
            auth = open_authority(self.identity.directory)
        except (AuthorityError, OSError):
            return None
        return lambda node_id, csr: renew(auth, self.db, node_id, csr)

    def start(self) -> None:
        """Start applying and connect."""
        self._thread.start()
        self.link.start()

    def stop(self) -> None:
        """Disconnect, finish the queue, close the store."""
        self.link.stop()
        self._inbox.put(None)
        self._thread.join(timeout=30)
        self.db.close()

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Network thread: hand over to the apply thread (blocks when it is behind)."""
        self._inbox.put((topic, payload))

    def _run(self) -> None:
        """Apply thread: one message at a time, never dies on a bad one."""
        while True:
            item = self._inbox.get()
            if item is None:
                return
            try:
                self._handle(*item)
            except Exception:
                log.exception("HQ worker failed on a message; the node will resend")
            self.handled += 1

    def _handle(self, topic: str, payload: bytes) -> None:
        """Status messages update the fleet view; `up` messages go through ingest."""
        node_id = topics.node_of(topic)
        if topic.endswith("/status"):
            self._status(node_id, payload)
            return
        started = time.perf_counter()
        outcome = self.ingest.handle(topic, payload, node_id)
        if self.metrics is not None:
            self.metrics.observe(outcome, time.perf_counter() - started)
        if outcome.node_id is None or outcome.quarantined:
            return
        if outcome.resume_seq is not None and outcome.acked_seq is not None:
            self.link.publish(topics.ack(outcome.node_id), resume_ack_envelope(
                outcome.node_id, outcome.acked_seq, outcome.resume_seq,
                str(outcome.restore_id), self.identity.sign_key, outcome.resume_more))
        elif outcome.acked_seq is not None:
            self.link.publish(topics.ack(outcome.node_id),
                              ack_envelope(outcome.node_id, outcome.acked_seq,
                                           self.identity.sign_key))
        self.send_down(outcome.node_id)

    def send_down(self, node_id: str) -> None:
        """Publish the node's unacknowledged downstream items, if any, paced (DownPacer)."""
        try:
            payload = pending_envelope(self.db, node_id, self.identity.sign_key,
                                       self.down_pacer)
        except ValueError as exc:
            log.warning("cannot send downstream to %s: %s", node_id, exc)
            return
        if payload is not None:
            self.link.publish(topics.down(node_id), payload)

    def _status(self, node_id: str | None, payload: bytes) -> None:
        """Record a node's retained status (JSON, no PII) for the fleet view."""
        if node_id is None or len(payload) > 4096:
            return
        try:
            status: Any = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if not isinstance(status, dict):
            return
        sent_at = status.get("at")
        if isinstance(sent_at, int | float) and status.get("state") == "online":
            status["clock_skew_s"] = round(sent_at - time.time(), 1)  # node ahead if > 0

        def run(tx: HQDatabase) -> None:
            tx.execute("UPDATE hq_nodes SET status = ?, last_seen = ? WHERE node_id = ?",
                       [json.dumps(status), utc_now(), node_id])

        self.db.retrying(run)
        online = status.get("state") == "online"
        if online and not self._online.get(node_id):
            self.down_pacer.reset(node_id)  # a new connection: resend at once
        self._online[node_id] = online
        if online:
            self.send_down(node_id)
