"""HQ ingest: check an upstream envelope, apply its records exactly once, compute the ack.

Order of checks (cheapest first): framing/version/size, topic node = header
node, node known and not revoked, signature by the node's enrolled
certificate, decryption, record shapes. Any failure quarantines the payload
with the reason and applies nothing. A valid batch is applied in one
transaction together with the node's new cumulative ack (highest contiguous
seq), so a replayed batch is acknowledged again and applied zero more times.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from certs.broker import NODE_ID
from hq import fleet_keys, lookups, projections, refusals, resume
from hq import pii as hq_pii
from hq.chain import index_audit_entry
from hq.downstream import realign
from hq.store import HQDatabase, utc_now
from sync import envelope
from sync.changes import OPS
from sync.hlc import HLCError, Timestamp
from sync.merge import State, incoming_clocks, merge, node_writes, policy_for
from sync.pii import PII_FIELDS, clear_problem

log = logging.getLogger(__name__)
TABLE_NAME = re.compile(r"^[a-z_]{1,40}$")
MAX_RECORDS = 20_000
SAMPLE_BYTES = 2048


class Rejected(Exception):
    """A payload failed a check; it goes to quarantine with `reason`."""

    def __init__(self, reason: str, detail: str, node: str | None = None) -> None:
        """Keep the machine-readable reason, a sentence, and the node it claimed to be."""
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.node = reason, detail, node


@dataclass(frozen=True)
class Outcome:
    """What handling one payload produced."""

    node_id: str | None
    acked_seq: int | None = None
    applied: int = 0
    down_acked: int | None = None
    quarantined: str | None = None
    resume_seq: int | None = None
    restore_id: str | None = None
    resume_more: dict[str, Any] | None = None


def register_node(db: HQDatabase, node_id: str, center_id: str, cert_pem: str,
                  hpke_public: str | None) -> None:
    """Record an enrolled node (or replace its certificate on renewal)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    if _common_name(cert) != node_id:
        raise ValueError("certificate common name does not match the node id")

    def run(tx: HQDatabase) -> None:
        tx.execute(
            "INSERT INTO hq_nodes (node_id, center_id, cert_pem, hpke_public, enrolled_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET cert_pem = ?, "
            "hpke_public = ?, center_id = ?",
            [node_id, center_id, cert_pem, hpke_public, utc_now(), cert_pem, hpke_public,
             center_id])

    db.retrying(run)


def _common_name(cert: x509.Certificate) -> str:
    """The certificate's CN."""
    return _common_name_of(cert.subject)


def _common_name_of(name: x509.Name) -> str:
    """The CN of a subject name."""
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _spki(key: Any) -> bytes:
    """DER SubjectPublicKeyInfo of a public key, for comparisons."""
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def quarantine(db: HQDatabase, source: str, payload: bytes, error: Rejected) -> None:
    """Keep a rejected payload's reason and a sample; never apply it."""
    sample = base64.b64encode(payload[:SAMPLE_BYTES]).decode()

    def run(tx: HQDatabase) -> None:
        tx.execute("INSERT INTO hq_quarantine (id, received_at, source, claimed_node, reason, "
                   "detail, size, sample) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [str(uuid.uuid4()), utc_now(), source[:300], error.node, error.reason,
                    error.detail[:500], len(payload), sample])

    db.retrying(run)


class Ingest:
    """Checks and applies upstream envelopes for one HQ worker."""

    def __init__(self, db: HQDatabase, hpke_private: x25519.X25519PrivateKey,
                 now: Callable[[], str] = utc_now,
                 renewer: Callable[[str, x509.CertificateSigningRequest], None] | None = None,
                 lookup_limit: int = lookups.LOOKUPS_PER_MINUTE) -> None:
        """Hold the store, HQ's decryption key, (where the CA is here) a renewer, and how
        many citizen lookups a node may make a minute."""
        self.db = db
        self.lookup_limit = lookup_limit
        self.hpke_private = hpke_private
        self.now = now
        self.renewer = renewer

    def handle(self, source: str, payload: bytes, topic_node: str | None) -> Outcome:
        """Check and apply one payload; `topic_node=None` for bundle files (no topic)."""
        try:
            return self._handle(payload, topic_node)
        except Rejected as exc:
            quarantine(self.db, source, payload, exc)
            return Outcome(exc.node, quarantined=exc.reason)
        except Exception as exc:  # a check we lack must not wedge the worker or the import
            log.exception("unexpected failure handling an envelope; quarantined")
            error = Rejected("internal_error", f"HQ failed on it: {type(exc).__name__}",
                             topic_node)
            quarantine(self.db, source, payload, error)
            return Outcome(topic_node, quarantined=error.reason)

    def _handle(self, payload: bytes, topic_node: str | None) -> Outcome:
        """The checks, in order; raises Rejected."""
        try:
            env = envelope.parse(payload)
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, topic_node) from exc
        node_id = env.header.get("node")
        if not isinstance(node_id, str) or not NODE_ID.match(node_id):
            raise Rejected("bad_header", "header has no valid node id", topic_node)
        if topic_node is not None and topic_node != node_id:
            raise Rejected("topic_mismatch", f"envelope of {node_id} on {topic_node}'s topic",
                           topic_node)
        self._verify_sender(env, node_id)
        if env.header["kind"] == "ack":
            return self._down_ack(env, node_id)
        if env.header["kind"] == "resume":
            return self._resume(env, node_id)
        if env.header["kind"] == "renew":
            return self._renew(env, node_id)
        if env.header["kind"] == "lookup":
            return self._lookup(env, node_id)
        if env.header["kind"] != "batch":
            raise Rejected("bad_kind", f"nodes may not send {env.header['kind']}", node_id)
        records = self._records(env, node_id)
        return self.db.retrying(lambda tx: self._apply(tx, node_id, records))

    def _verify_sender(self, env: envelope.Envelope, node_id: str) -> None:
        """Known, not revoked, and signed by the node's enrolled key."""
        row = self.db.execute("SELECT cert_pem, revoked FROM hq_nodes WHERE node_id = ?",
                              [node_id]).fetchone()
        if row is None:
            raise Rejected("unknown_node", f"{node_id} is not enrolled", node_id)
        if row[1]:
            raise Rejected("revoked", f"{node_id} is revoked", node_id)
        key = x509.load_pem_x509_certificate(row[0].encode()).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Rejected("bad_key", "enrolled certificate has no EC key", node_id)
        try:
            envelope.verify(env, key)
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, node_id) from exc

    def _records(self, env: envelope.Envelope, node_id: str) -> list[dict[str, Any]]:
        """Decrypt and check every record of a batch."""
        if not env.header.get("enc"):
            raise Rejected("not_encrypted", "batches must be encrypted to HQ", node_id)
        try:
            body = envelope.open_body(env, self.hpke_private)
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, node_id) from exc
        first, last = env.header.get("first_seq"), env.header.get("last_seq")
        if not isinstance(body, list) or not body or len(body) > MAX_RECORDS:
            raise Rejected("bad_body", "body must be a non-empty list of records", node_id)
        if not (envelope.valid_seq(first) and envelope.valid_seq(last)) or first > last:
            raise Rejected("bad_header", f"header seq range must lie within "
                           f"1..{envelope.MAX_SEQ}", node_id)
        for record in body:
            problem = _record_problem(record, first, last, node_id)
            if problem:
                raise Rejected("bad_record", problem, node_id)
            if not node_writes(record["tbl"]):
                raise Rejected("not_owned", f"a node may not write table {record['tbl']} "
                               "(HQ owns it)", node_id)
        return body

    def _apply(self, tx: HQDatabase, node_id: str, records: list[dict[str, Any]]) -> Outcome:
        """Apply new records and advance the cumulative ack, in the caller's transaction."""
        row = tx.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?" + tx.lock_clause(),
                         [node_id]).fetchone()
        acked, applied = int(row[0]), 0
        for record in sorted(records, key=lambda r: (r["tbl"], r["pk"], r["seq"])):
            if record["seq"] <= acked or not _first_sight(tx, node_id, record["seq"]):
                continue
            apply_record(tx, node_id, record, self.now())
            applied += 1
        acked = _advance(tx, node_id, acked)
        tx.execute("UPDATE hq_nodes SET acked_seq = ?, last_seen = ? WHERE node_id = ?",
                   [acked, self.now(), node_id])
        return Outcome(node_id, acked_seq=acked, applied=applied)

    def _lookup(self, env: envelope.Envelope, node_id: str) -> Outcome:
        """A node's reception asks for a citizen by fleet index (hq/lookups.py): audited,
        answered on the node's downstream queue (the worker sends it at once)."""
        if not env.header.get("enc"):
            raise Rejected("not_encrypted", "lookups must be encrypted to HQ", node_id)
        try:
            request = lookups.parse_request(envelope.open_body(env, self.hpke_private))
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, node_id) from exc
        except ValueError as exc:
            raise Rejected("bad_body", str(exc), node_id) from exc
        outcome = self.db.retrying(lambda tx: lookups.answer(
            tx, node_id, request, self.now(), self.lookup_limit))
        if outcome == "rate_limited":
            log.warning("node %s asked for more than %d citizens a minute; not answered",
                        node_id, self.lookup_limit)
        return Outcome(node_id)

    def _renew(self, env: envelope.Envelope, node_id: str) -> Outcome:
        """A node asks for a new certificate for the key it already has."""
        try:
            body = envelope.open_body(env, self.hpke_private)
            csr = x509.load_pem_x509_csr(str(body["csr"]).encode())
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, node_id) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise Rejected("bad_body", "renewal needs a PEM csr", node_id) from exc
        row = self.db.execute("SELECT cert_pem FROM hq_nodes WHERE node_id = ?",
                              [node_id]).fetchone()
        current = x509.load_pem_x509_certificate(row[0].encode())
        if not csr.is_signature_valid or _common_name_of(csr.subject) != node_id or \
                _spki(csr.public_key()) != _spki(current.public_key()):
            raise Rejected("bad_csr", "renewal CSR must be for this node and its key", node_id)
        if self.renewer is None:
            raise Rejected("no_ca", "this worker has no CA to renew certificates", node_id)
        self.renewer(node_id, csr)
        return Outcome(node_id)

    def _resume(self, env: envelope.Envelope, node_id: str) -> Outcome:
        """A restored node asks where its new records may start (hq/resume.py)."""
        try:
            request = resume.parse_request(envelope.open_body(env, self.hpke_private))
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, node_id) from exc
        except ValueError as exc:
            raise Rejected("bad_body", str(exc), node_id) from exc
        try:
            outcome: Outcome = self.db.retrying(lambda tx: self._reserve(tx, node_id, request))
        except resume.ResumeError as exc:
            raise Rejected("bad_body", str(exc), node_id) from exc
        return outcome

    def _reserve(self, tx: HQDatabase, node_id: str, request: resume.ResumeRequest) -> Outcome:
        """Answer a resume request in the caller's transaction."""
        acked, resume_seq, more = resume.reserve(tx, node_id, request)
        acked = _advance(tx, node_id, acked)
        tx.execute("UPDATE hq_nodes SET acked_seq = ?, last_seen = ? WHERE node_id = ?",
                   [acked, self.now(), node_id])
        return Outcome(node_id, acked_seq=acked, resume_seq=resume_seq,
                       restore_id=request.restore_id, resume_more=more)

    def _down_ack(self, env: envelope.Envelope, node_id: str) -> Outcome:
        """A node confirms the downstream messages it has applied."""
        try:
            body = envelope.open_body(env, self.hpke_private)
        except envelope.EnvelopeError as exc:
            raise Rejected(exc.reason, exc.detail, node_id) from exc
        seq = body.get("down_seq") if isinstance(body, dict) else None
        if not envelope.valid_seq(seq, lowest=0):
            raise Rejected("bad_body", f"ack needs a down_seq within 0..{envelope.MAX_SEQ}",
                           node_id)
        refused = _refused_in(body, seq, node_id)

        def run(tx: HQDatabase) -> None:
            realign(tx, node_id, seq, "downstream ack")
            tx.execute("UPDATE hq_nodes SET last_seen = ? WHERE node_id = ?",
                       [self.now(), node_id])
            refusals.record_refused(tx, node_id, refused, self.now())
            fleet_keys.retire_acked(tx)

        self.db.retrying(run)
        return Outcome(node_id, down_acked=seq)


def _refused_in(body: dict[str, Any], down_seq: int, node_id: str) -> list[refusals.Refusal]:
    """The refused items a down ack names (hq/refusals.py); Rejected when malformed."""
    try:
        return refusals.parse_refused(body, down_seq)
    except ValueError as exc:
        raise Rejected("bad_refused", str(exc), node_id) from exc


def _record_problem(record: Any, first: int, last: int, node_id: str) -> str | None:
    """Why a record is malformed, or None."""
    if not isinstance(record, dict):
        return "record is not an object"
    seq, tbl, pk, op = (record.get(k) for k in ("seq", "tbl", "pk", "op"))
    if not isinstance(seq, int) or isinstance(seq, bool) or not first <= seq <= last:
        return "record seq outside the batch range"
    if not isinstance(tbl, str) or not TABLE_NAME.match(tbl):
        return "record table name invalid"
    if not isinstance(pk, str) or not 0 < len(pk) <= 128:
        return "record key invalid"
    if op not in OPS or not isinstance(record.get("data"), dict | None):
        return "record op or data invalid"
    pii_problem = clear_problem(tbl, record.get("data"))
    if pii_problem:
        return pii_problem
    try:
        stamp = Timestamp.parse(record.get("hlc", ""))
    except HLCError:
        return "record HLC malformed"
    if stamp.node_id != node_id and not policy_for(tbl).cross_node_writable:
        return "record HLC names another node"
    return None


def _first_sight(tx: HQDatabase, node_id: str, seq: int) -> bool:
    """Record (node, seq) as seen; False when it was seen before (a duplicate)."""
    cur = tx.execute("INSERT INTO hq_seen (node_id, seq) VALUES (?, ?) "
                     "ON CONFLICT (node_id, seq) DO NOTHING", [node_id, seq])
    return bool(cur.rowcount)


def _advance(tx: HQDatabase, node_id: str, acked: int) -> int:
    """Move the ack over contiguous seen seqs, then forget those at or below it."""
    while True:
        rows = tx.execute("SELECT seq FROM hq_seen WHERE node_id = ? AND seq > ? ORDER BY seq "
                          "LIMIT 1000", [node_id, acked]).fetchall()
        for (seq,) in rows:
            if seq != acked + 1:
                break
            acked = seq
        else:
            if len(rows) == 1000:
                continue
        break
    tx.execute("DELETE FROM hq_seen WHERE node_id = ? AND seq <= ?", [node_id, acked])
    return acked


def apply_record(tx: HQDatabase, node_id: str, record: dict[str, Any], now: str) -> None:
    """Merge one record into hq_records, its typed projection (hq/projections.py) and, for
    audit entries, hq_audit."""
    tbl, pk = record["tbl"], record["pk"]
    row = tx.execute("SELECT state, origin FROM hq_records WHERE tbl = ? AND pk = ?"
                     + tx.lock_clause(), [tbl, pk]).fetchone()
    pol = policy_for(tbl)
    data = hq_pii.protect(tx, tbl, record["data"])  # PII under HQ's key before it is stored
    held = State.from_json(row[0] if row else None)
    if data is not None and tbl in PII_FIELDS:
        hq_pii.upgrade_legacy(held, tbl, data, incoming_clocks(data, record["hlc"], pol))
    state, conflicts = merge(held, pol, record["op"], data, record["hlc"])
    visible = state.visible()
    state_json, row_json = state.to_json(), _dumps(visible)  # once: JSON is the cost
    newest = max([record["hlc"], *state.clocks.values()])
    tx.execute(
        "INSERT INTO hq_records (tbl, pk, origin, state, row_json, hlc, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tbl, pk) DO UPDATE SET state = ?, "
        "row_json = ?, hlc = ?, updated_at = ?",
        [tbl, pk, node_id, state_json, row_json, newest, now, state_json, row_json, newest,
         now])
    tx.execute("DELETE FROM hq_conflicts WHERE tbl = ? AND pk = ?", [tbl, pk])
    for c in conflicts:
        tx.execute("INSERT INTO hq_conflicts (tbl, pk, col, clock, value_json, winner_clock) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   [tbl, pk, c.column, c.clock, json.dumps(c.value), c.winner_clock])
    projections.project(tx, tbl, pk, row[1] if row else node_id, visible, newest)
    if pol.hash_chained and record["data"]:
        index_audit_entry(tx, node_id, record["data"])


def _dumps(value: Any) -> str | None:
    """JSON text or None."""
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)
