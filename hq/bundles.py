"""HQ's side of file bundles: apply a node's bundle, write the ack bundle that goes back.

Each envelope of a bundle goes through the same `Ingest.handle` as an MQTT
message (no topic, so the header names the node and its enrolled key must
have signed it): same checks, same quarantine, same exactly-once apply. A bad
envelope is quarantined and the good ones around it still apply. For every
node that had an envelope accepted, the ack bundle holds HQ's signed
cumulative ack and the node's pending downstream items.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hq.downstream import ack_envelope, pending_envelope
from hq.ingest import Ingest
from hq.store import HQDatabase
from sync import envelope
from sync.bundle import SUFFIX, BundleError, BundleReader, write_bundle
from sync.identity import HQIdentity


@dataclass
class NodeResult:
    """One node's share of an import."""

    node_id: str
    acked_seq: int = 0
    ack_file: Path | None = None
    note: str | None = None


@dataclass
class ImportReport:
    """Counts and per-node results of one bundle import."""

    envelopes: int = 0
    accepted: int = 0
    applied_records: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    nodes: dict[str, NodeResult] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        """How many envelopes were quarantined."""
        return sum(self.quarantined.values())


def ack_name(node_id: str, acked_seq: int) -> str:
    """`NODE-ack-SEQ.keb`."""
    return f"{node_id}-ack-{acked_seq}{SUFFIX}"


def import_bundle(db: HQDatabase, identity: HQIdentity, path: Path,
                  ack_dir: Path | None = None) -> ImportReport:
    """Apply every envelope of a verified bundle; write ack bundles when `ack_dir` is given.

    Raises sync.bundle.BundleError (before applying anything) for a truncated,
    corrupt or foreign file.
    """
    report = ImportReport()
    ingest = Ingest(db, identity.hpke_private)
    with BundleReader(path) as reader:
        _refuse_hq_bundle(reader, identity)
        for data in reader:
            report.envelopes += 1
            outcome = ingest.handle(f"bundle:{path.name}", data, topic_node=None)
            if outcome.quarantined or outcome.node_id is None:
                report.quarantined[outcome.quarantined or "unknown"] += 1
                continue
            report.accepted += 1
            report.applied_records += outcome.applied
            report.nodes.setdefault(outcome.node_id, NodeResult(outcome.node_id))
    for result in report.nodes.values():
        result.acked_seq = _acked_seq(db, result.node_id)
        if ack_dir is not None:
            write_ack_bundle(db, identity, result, ack_dir)
    return report


def _refuse_hq_bundle(reader: BundleReader, identity: HQIdentity) -> None:
    """An ack bundle HQ wrote itself is meant for a node: say so instead of quarantining it."""
    first = next(iter(reader), None)
    if first is None:
        return
    try:
        envelope.verify(envelope.parse(first), identity.sign_key.public_key())
    except envelope.EnvelopeError:
        return
    raise BundleError("wrong_direction", f"{reader.path.name} is an ack bundle written by HQ; "
                      "apply it on the node with `edge-node sync import-ack`")


def _acked_seq(db: HQDatabase, node_id: str) -> int:
    """The node's cumulative ack as HQ has committed it."""
    row = db.execute("SELECT acked_seq FROM hq_nodes WHERE node_id = ?", [node_id]).fetchone()
    return int(row[0]) if row else 0


def write_ack_bundle(db: HQDatabase, identity: HQIdentity, result: NodeResult,
                     directory: Path) -> None:
    """HQ's signed ack plus the node's pending downstream envelope, as one bundle."""
    envelopes = [ack_envelope(result.node_id, result.acked_seq, identity.sign_key)]
    try:
        down = pending_envelope(db, result.node_id, identity.sign_key)
    except ValueError as exc:
        down, result.note = None, f"downstream not included: {exc}"
    if down is not None:
        envelopes.append(down)
    result.ack_file = write_bundle(directory, ack_name(result.node_id, result.acked_seq),
                                   envelopes)
