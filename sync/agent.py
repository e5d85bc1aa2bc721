"""The node's sync agent: streams the outbox to HQ and applies what HQ sends down.

The outbox in SQLite is the only durable queue. The agent publishes a window of
batches after the last acknowledged seq (QoS 1) and marks records delivered only
when HQ's cumulative ack arrives, never on PUBACK. No ack within ACK_TIMEOUT_S,
or a dropped link: back to the last ack and send again (HQ applies idempotently).
PUBACK 0x10 (no matching subscribers: HQ's shared subscription is gone after a
broker or HQ restart) means nobody got it: back at once, then one small probe
batch at a growing jittered delay (at most HQ_PROBE_MAX_S) until one is routed.
Batch size grows while acks come promptly and halves on a timeout; only the
in-flight window is held in memory, whatever the backlog.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sync import batches, envelope, renewal, topics
from sync.batches import BATCH_MAX_BYTES
from sync.identity import NodeIdentity
from sync.outbox_port import OutboxPort
from sync.transport import LinkConfig, MqttLink

log = logging.getLogger(__name__)

WINDOW_BATCHES = 4
BATCH_MIN_RECORDS = 20
BATCH_MAX_RECORDS = 2000
ACK_TIMEOUT_S = 20.0
TICK_S = 0.2
STATUS_EVERY_S = 30.0
RENEW_AT_LIFE_FRACTION = 2 / 3  # ask HQ for a new certificate after 2/3 of its life
RENEW_RETRY_S = 3600.0
DOWN_ACK_REPEAT_S = 20.0  # the same downstream ack again at most this often
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK: accepted, but no subscriber got it
HQ_PROBE_MIN_S = 0.5  # first wait before probing again after HQ was found absent
HQ_PROBE_MAX_S = 4.0  # longest wait between probes (each one batch of BATCH_MIN_RECORDS)


@dataclass
class _InFlight:
    """A published batch waiting for HQ's ack."""

    first: int
    last: int
    sent_at: float
    size: int


class Agent:
    """Owns the MQTT link of a node and its upstream window."""

    def __init__(self, port: OutboxPort, identity: NodeIdentity, version: str,
                 link_factory: Callable[..., MqttLink] = MqttLink) -> None:
        """Prepare (nothing connects until `start`)."""
        self.port, self.identity, self.version = port, identity, version
        node = identity.node_id
        self.link = link_factory(LinkConfig(
            client_id=node, host=identity.broker_host, port=identity.broker_port,
            cafile=identity.cafile, certfile=identity.certfile, keyfile=identity.keyfile,
            subscriptions=[(topics.ack(node), 1), (topics.down(node), 1)],
            will=(topics.status(node), json.dumps({"state": "offline"}).encode())),
            self._on_message, self._on_connected, self._on_disconnected)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._inflight: deque[_InFlight] = deque()
        self._restore = port.restore_point()  # set: ask HQ where new records may start
        self._resume_asked_at = 0.0
        self._next = port.acked_seq() + 1
        self._generation = 0  # bumped by every reset: PUBACKs of older batches are stale
        self._hq_away = False  # the broker said no subscriber got our last batch
        self._probe_delay = self._probe_at = 0.0
        self.batch_records = BATCH_MIN_RECORDS * 5
        self.last_ack_at: float | None = None
        self.bytes_sent = 0
        self._status_at = self._renew_asked_at = 0.0
        self._down_acked = (-1, 0.0)  # (seq, monotonic time) of the last downstream ack sent
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect and start streaming."""
        self.link.start()
        self._thread = threading.Thread(target=self._run, name="sync-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Publish an offline status, stop the loop and the link."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._publish_status("offline")
        self.link.stop()

    def wake(self) -> None:
        """New outbox records exist: send without waiting for the next tick."""
        self._wake.set()

    # -- upstream --------------------------------------------------------------------------
    def _run(self) -> None:
        """Fill the window, resend on timeout, publish status; until stopped."""
        while not self._stop.is_set():
            try:
                self._drain_inbox()
                if self.link.connected:
                    self._check_timeout()
                    self._maybe_ask_resume()
                    self._fill_window()
                    self._maybe_status()
            except Exception:
                log.exception("sync agent step failed")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def _fill_window(self) -> None:
        """Publish batches until the window is full or nothing is pending.

        While HQ is away the window is one small probe batch, sent when its delay is up.
        """
        while not self._stop.is_set():
            with self._lock:
                if self._hq_away and (self._inflight or time.monotonic() < self._probe_at):
                    return
                if len(self._inflight) >= WINDOW_BATCHES:
                    return
                start, generation = self._next, self._generation
                limit = BATCH_MIN_RECORDS if self._hq_away else self.batch_records
            records = self._take(start, limit)
            if not records:
                return
            payload = self._seal(records)
            if not self.link.publish(topics.up(self.identity.node_id), payload, qos=1,
                                     on_puback=partial(self._on_batch_puback, generation)):
                return
            with self._lock:
                if self._next != start or self._generation != generation:
                    continue  # an ack, a reset or a 0x10 moved the cursor meanwhile
                self._inflight.append(_InFlight(records[0]["seq"], records[-1]["seq"],
                                                time.monotonic(), len(payload)))
                self._next = records[-1]["seq"] + 1
                self.bytes_sent += len(payload)

    def _take(self, start: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` records from `start`, cut at BATCH_MAX_BYTES of JSON."""
        return batches.take_batch(self.port, start, limit, BATCH_MAX_BYTES)

    def _seal(self, records: list[dict[str, Any]]) -> bytes:
        """One upstream batch envelope, encrypted to HQ and signed."""
        return batches.seal_batch(self.identity, records)

    def _check_timeout(self) -> None:
        """Go back to the last ack when the oldest batch waited too long."""
        with self._lock:
            if not self._inflight:
                return
            if time.monotonic() - self._inflight[0].sent_at < ACK_TIMEOUT_S:
                return
            log.info("no ack for seq %d..%d; resending", self._inflight[0].first,
                     self._inflight[-1].last)
            self.batch_records = max(BATCH_MIN_RECORDS, self.batch_records // 2)
            self._reset_locked()

    def _reset_locked(self) -> None:
        """Forget in-flight batches and resume after the durable ack."""
        self._inflight.clear()
        self._next = self.port.acked_seq() + 1
        self._generation += 1

    def _on_batch_puback(self, generation: int, code: int) -> None:
        """The broker's answer to a batch: 0x10 means HQ is away, anything routed that it is back.

        Network thread. Answers to batches sent before the last reset are stale and ignored.
        """
        with self._lock:
            if generation != self._generation:
                return
            if code == NO_MATCHING_SUBSCRIBERS:
                self._hq_away_locked()
                return
            if code >= 0x80 or not self._hq_away:
                return
            self._hq_away = False
        log.info("HQ is subscribed again: streaming the backlog")
        self._wake.set()

    def _hq_away_locked(self) -> None:
        """Nobody got the batch: go back to the ack now and probe again after a paced delay."""
        if not self._hq_away:
            log.info("no HQ worker is subscribed (broker: no matching subscribers); "
                     "probing until one is")
            self._probe_delay = HQ_PROBE_MIN_S
        else:
            self._probe_delay = min(HQ_PROBE_MAX_S, self._probe_delay * 2)
        self._hq_away = True
        self._probe_at = time.monotonic() + self._probe_delay * random.uniform(0.5, 1.0)
        self._reset_locked()

    def _on_connected(self) -> None:
        """A new session: resend everything after the last ack (one probe first if HQ was away)."""
        with self._lock:
            self._reset_locked()
            self._probe_at = 0.0
        self._status_at = 0.0
        self._resume_asked_at = 0.0
        self._down_acked = (-1, 0.0)
        self.port.record_link("online")
        self._wake.set()

    def _on_disconnected(self) -> None:
        """The link dropped; the connect loop retries with jittered backoff."""
        self.port.record_link("offline")

    # -- downstream ------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        """paho's network thread: hand the message to the agent's thread and return at once,
        so applying downstream items (a writer round trip each) never holds up PUBACKs,
        acks or keepalive pings. A message lost with the process is sent again by HQ."""
        self._inbox.put((topic, payload))
        self._wake.set()

    def _drain_inbox(self) -> None:
        """Handle every message paho handed over, in arrival order (agent thread)."""
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle_message(topic, payload)

    def _handle_message(self, topic: str, payload: bytes) -> None:
        """Acks and downstream envelopes, both signed by HQ."""
        try:
            env = envelope.parse(payload)
            envelope.verify(env, self.identity.hq_sign_public)
            if env.header.get("node") != self.identity.node_id:
                raise envelope.EnvelopeError("topic_mismatch", "addressed to another node")
            body = envelope.open_body(env, self.identity.hpke_private)
        except envelope.EnvelopeError as exc:
            log.warning("dropped a message from HQ on %s: %s", topic, exc.reason)
            return
        if env.header["kind"] == "ack":
            self._handle_ack(body)
        elif env.header["kind"] == "down":
            self._handle_down(body)

    def _handle_ack(self, body: Any) -> None:
        """Advance the durable ack and slide the window."""
        if self._restore is not None and isinstance(body, dict) \
                and body.get("restore_id") == self._restore[1]:
            self._resume(body)
            return
        seq = body.get("acked_seq") if isinstance(body, dict) else None
        if not isinstance(seq, int):
            return
        if isinstance(body.get("hq_hlc"), str):
            self.port.record_hq_clock(body["hq_hlc"])
        with self._lock:
            if seq <= self.port.acked_seq():
                return
            self.port.mark_acked(seq)
            self.last_ack_at = time.time()
            now = time.monotonic()
            prompt = bool(self._inflight) and now - self._inflight[0].sent_at < ACK_TIMEOUT_S / 4
            while self._inflight and self._inflight[0].last <= seq:
                self._inflight.popleft()
            if self._inflight:  # its wait starts now: time queued behind acked batches is progress
                self._inflight[0].sent_at = max(self._inflight[0].sent_at, now)
            self._next = max(self._next, seq + 1)
            if prompt:
                self.batch_records = min(BATCH_MAX_RECORDS, self.batch_records * 2)
        self._wake.set()

    # -- after a restore from backup -------------------------------------------------------
    def _maybe_ask_resume(self) -> None:
        """Restored: ask HQ (again after ACK_TIMEOUT_S) where new records may start."""
        if self._restore is None or \
                time.monotonic() - self._resume_asked_at < ACK_TIMEOUT_S:
            return
        seq, restore_id = self._restore
        payload = envelope.seal({"kind": "resume", "node": self.identity.node_id},
                                {"restored_seq": seq, "restore_id": restore_id,
                                 "down_seq": self.port.down_seq(),
                                 "epoch": self.port.restore_epoch()},
                                self.identity.key, self.identity.hq_hpke_public)
        if self.link.publish(topics.up(self.identity.node_id), payload, qos=1):
            self._resume_asked_at = time.monotonic()
            log.info("restored at seq %d: asked HQ where new records may start", seq)

    def _resume(self, body: dict[str, Any]) -> None:
        """HQ answered: renumber records made since the restore, then stream as usual."""
        acked, resume_seq = body.get("acked_seq"), body.get("resume_seq")
        if not isinstance(acked, int) or not isinstance(resume_seq, int):
            return
        head = body.get("audit_head")
        audit_head = (head[0], head[1]) if isinstance(head, list) and len(head) == 2 \
            and isinstance(head[0], int) and isinstance(head[1], str) else None
        if body.get("epoch_reused"):
            log.warning("HQ saw restore epoch %s from another restore of this node (the same "
                        "backup restored twice?): numbers issued since may repeat",
                        body.get("epoch"))
        with self._lock:
            self.port.resume(acked, resume_seq, audit_head)
            self._restore = None
            self._reset_locked()
        log.info("resumed after restore: new records continue after seq %d", resume_seq)
        self._wake.set()

    def _handle_down(self, body: Any) -> None:
        """Apply downstream items in seq order, then ack the highest applied (a gap or a
        resend is logged; a repeated ack waits DOWN_ACK_REPEAT_S, so HQ cannot make us loop)."""
        serial = self.identity.certificate().serial_number
        before = self.port.down_seq()
        applied = batches.apply_down_items(self.port, body)
        if not applied:
            batches.log_down_mismatch(before, body)
        self._send_down_ack()
        if self.identity.certificate().serial_number != serial:  # renewed certificate
            self._renew_asked_at = 0.0
            self.link.reload_credentials()

    def _send_down_ack(self) -> None:
        """Tell HQ which downstream seq is applied (a repeat at most every DOWN_ACK_REPEAT_S)."""
        seq, now = self.port.down_seq(), time.monotonic()
        if seq == self._down_acked[0] and now - self._down_acked[1] < DOWN_ACK_REPEAT_S:
            return
        payload = batches.seal_port_down_ack(self.identity, self.port)
        if self.link.publish(topics.up(self.identity.node_id), payload, qos=1):
            self._down_acked = (seq, now)

    # -- status ----------------------------------------------------------------------------
    def _maybe_status(self) -> None:
        """Refresh the retained status message now and then."""
        if time.monotonic() - self._status_at >= STATUS_EVERY_S:
            self._publish_status("online")
            self._maybe_renew()

    def renewal_due(self) -> bool:
        """True once the certificate has lived RENEW_AT_LIFE_FRACTION of its validity."""
        return renewal.due(self.identity.certificate(), RENEW_AT_LIFE_FRACTION)

    def _maybe_renew(self) -> None:
        """Send a CSR for the same key to HQ (no site visit); retried hourly until renewed."""
        if not self.renewal_due():
            return
        if self._renew_asked_at and time.monotonic() - self._renew_asked_at < RENEW_RETRY_S:
            return
        payload = renewal.seal_request(self.identity)
        if self.link.publish(topics.up(self.identity.node_id), payload, qos=1):
            self._renew_asked_at = time.monotonic()
            log.info("certificate renewal requested")

    def _publish_status(self, state: str) -> None:
        """Retained health (no PII): state, backlog, version, HLC, the live summary."""
        self._status_at = time.monotonic()
        stats = self.port.stats()
        message = {"state": state, "backlog": stats.get("count", 0),
                   "oldest_unsent_age_s": stats.get("oldest_age_s"), "version": self.version,
                   "hlc": self.port.hlc_now(), "acked_seq": self.port.acked_seq(),
                   "down_seq": self.port.down_seq(), "at": time.time(),
                   "live": self.port.live_summary()}
        self.link.publish(topics.status(self.identity.node_id),
                          json.dumps(message).encode(), qos=1, retain=True)

    def status(self) -> dict[str, Any]:
        """For `/api/sync/status` and `edge-node sync status`."""
        stats = self.port.stats()
        with self._lock:
            inflight = len(self._inflight)
        return {**stats, "link": "online" if self.link.connected else "offline",
                "acked_seq": self.port.acked_seq(), "last_ack_at": self.last_ack_at,
                "in_flight_batches": inflight, "batch_records": self.batch_records,
                "bytes_sent": self.bytes_sent}

    def push(self, timeout_s: float, progress: Callable[[dict[str, Any]], None] | None = None
             ) -> bool:
        """Sync now: wait until the backlog is empty (True) or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._wake.set()
            current = self.status()
            if progress:
                progress(current)
            if current.get("count", 0) == 0:
                return True
            time.sleep(0.2)
        return False
