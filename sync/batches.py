"""What a node puts in envelopes and takes out of them, whatever carries them.

The MQTT agent (sync/agent.py) and file bundles (sync/bundle.py) both cut the
outbox into batches, seal them to HQ, acknowledge downstream items and apply
them — with these functions, so the two paths produce the same envelopes and
apply HQ's messages the same way.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Protocol

from sync import envelope
from sync.identity import NodeIdentity

log = logging.getLogger(__name__)
BATCH_MAX_BYTES = 600_000
RECORD_OVERHEAD_BYTES = 80
MAX_REFUSED_IN_ACK = 256  # newest refusals repeated in every down ack (HQ records each once)
REFUSAL_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # a machine code, e.g. missing_field
REFUSAL_DETAIL_MAX = 200  # characters of explanation (never PII)


class PendingSource(Protocol):
    """The part of the outbox port that reads unsent records."""

    def pending(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Outbox records with seq > after_seq, oldest first."""


class DownTarget(Protocol):
    """The part of the outbox port that applies downstream items."""

    def down_seq(self) -> int:
        """Highest downstream seq applied."""

    def apply_down(self, seq: int, kind: str, payload: Any) -> None:
        """Apply one downstream item (idempotent) and record its seq."""


class RefusalSource(Protocol):
    """The part of the outbox port that knows which downstream items were refused."""

    def down_seq(self) -> int:
        """Highest downstream seq processed (applied or refused)."""

    def refused_down(self) -> list[dict[str, Any]]:
        """Newest refusals as [{"seq", "reason", "detail"}], oldest first, at most
        MAX_REFUSED_IN_ACK."""


def take_batch(port: PendingSource, start: int, limit: int,
               max_bytes: int = BATCH_MAX_BYTES) -> list[dict[str, Any]]:
    """Up to `limit` records from seq `start`, cut at `max_bytes` of JSON (at least one)."""
    records: list[dict[str, Any]] = []
    size = 0
    for record in port.pending(start - 1, limit):
        size += len(json.dumps(record["data"])) + RECORD_OVERHEAD_BYTES
        if records and size > max_bytes:
            break
        records.append(record)
    return records


def seal_batch(identity: NodeIdentity, records: list[dict[str, Any]]) -> bytes:
    """One upstream batch envelope, encrypted to HQ and signed by the node."""
    header = {"kind": "batch", "node": identity.node_id,
              "first_seq": records[0]["seq"], "last_seq": records[-1]["seq"],
              "count": len(records), "hlc": records[-1]["hlc"]}
    return envelope.seal(header, records, identity.key, identity.hq_hpke_public)


def seal_request(identity: NodeIdentity, kind: str, body: dict[str, Any]) -> bytes:
    """A request to HQ (e.g. a citizen `lookup`), encrypted to HQ and signed by the node;
    HQ answers it with a downstream item."""
    return envelope.seal({"kind": kind, "node": identity.node_id}, body, identity.key,
                         identity.hq_hpke_public)


def seal_down_ack(identity: NodeIdentity, down_seq: int,
                  refused: list[dict[str, Any]] | None = None) -> bytes:
    """The node's ack of the downstream items it has processed, encrypted to HQ and signed.

    `refused` names the items among them that were not applied, each with a reason
    code and a short text: `{"seq": 4, "reason": "missing_field", "detail": "…"}`.
    """
    header = {"kind": "ack", "node": identity.node_id}
    body: dict[str, Any] = {"down_seq": down_seq}
    named = [entry for entry in refused or [] if entry["seq"] <= down_seq]
    if named:  # an ack only speaks for the seqs it covers
        body["refused"] = named[-MAX_REFUSED_IN_ACK:]
    return envelope.seal(header, body, identity.key, identity.hq_hpke_public)


def seal_port_down_ack(identity: NodeIdentity, port: RefusalSource) -> bytes:
    """The down ack for what `port` has processed, naming the items it refused."""
    return seal_down_ack(identity, port.down_seq(), port.refused_down())


def ack_seq_of(body: Any) -> int | None:
    """The cumulative seq in HQ's ack body, or None when it has none (or one out of range)."""
    seq = body.get("acked_seq") if isinstance(body, dict) else None
    return seq if envelope.valid_seq(seq, lowest=0) else None


def down_items_problem(body: Any) -> str | None:
    """Why a downstream body is unusable (not a list, an item without a valid seq), or None."""
    if not isinstance(body, list):
        return "downstream body is not a list"
    for item in body:
        if not isinstance(item, dict) or not envelope.valid_seq(item.get("seq")):
            return f"downstream item without a seq within 1..{envelope.MAX_SEQ}"
    return None


def down_seqs(body: Any) -> list[int]:
    """The seqs of the downstream items in an envelope body (malformed items left out)."""
    items = body if isinstance(body, list) else []
    return [i["seq"] for i in items if isinstance(i, dict) and isinstance(i.get("seq"), int)
            and not isinstance(i["seq"], bool)]


def apply_down_items(port: DownTarget, body: Any) -> int:
    """Apply downstream items in seq order, stopping at a gap; returns how many were new."""
    items = [i for i in body if isinstance(i, dict) and envelope.valid_seq(i.get("seq"))] \
        if isinstance(body, list) else []
    applied = 0
    for item in sorted(items, key=lambda i: int(i["seq"])):
        current = port.down_seq()
        if item["seq"] <= current:
            continue
        if item["seq"] != current + 1:
            break  # a gap: HQ resends from our ack
        port.apply_down(item["seq"], str(item.get("kind")), item.get("payload"))
        applied += 1
    return applied


def log_down_mismatch(down_seq: int, body: Any) -> None:
    """Nothing applied: say whether HQ skipped ahead (a gap) or resent old items."""
    seqs = down_seqs(body)
    if not seqs:
        return
    if min(seqs) > down_seq + 1:
        log.warning("downstream gap: applied through %d, HQ sent %d..%d; asking HQ to "
                    "send again from %d", down_seq, min(seqs), max(seqs), down_seq + 1)
    else:
        log.info("HQ sent downstream %d..%d again; applied through %d", min(seqs),
                 max(seqs), down_seq)
