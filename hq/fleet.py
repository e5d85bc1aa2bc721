"""HQ's view of the fleet: who is behind, offline, skewed, expiring; quarantine; conflicts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from hq.chain import verify_chain
from hq.refusals import refused_count
from hq.store import HQDatabase


def fleet(db: HQDatabase) -> list[dict[str, Any]]:
    """One row per node: last seen, backlog, version, clock skew, cert expiry, chain,
    downstream items pending and refused."""
    out = []
    for node_id, center, cert_pem, revoked, acked, seen, status_text, down_seq, down_acked in \
            db.execute("SELECT node_id, center_id, cert_pem, revoked, acked_seq, last_seen, "
                       "status, down_seq, down_acked FROM hq_nodes ORDER BY node_id").fetchall():
        status = _status(status_text)
        days_left = cert_days_left(cert_pem)
        out.append({
            "node_id": node_id, "center_id": center, "revoked": bool(revoked),
            "state": status.get("state", "unknown"), "last_seen": seen,
            "acked_seq": acked, "backlog": status.get("backlog"),
            "oldest_unsent_age_s": status.get("oldest_unsent_age_s"),
            "version": status.get("version"), "clock_skew_s": status.get("clock_skew_s"),
            "cert_days_left": days_left, "down_pending": down_seq - down_acked,
            "down_refused": refused_count(db, node_id),
            "chain_problems": verify_chain(db, node_id),
        })
    return out


def cert_days_left(cert_pem: str | None) -> int | None:
    """Days until the certificate expires; None when it can't be read (shown as unknown,
    never a failed page: one bad row must not hide the fleet)."""
    try:
        cert = x509.load_pem_x509_certificate((cert_pem or "").encode())
    except ValueError:
        return None
    return (cert.not_valid_after_utc - datetime.now(UTC)).days


def _status(text: str | None) -> dict[str, Any]:
    """The node's last status message; {} when absent or unreadable."""
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def quarantine_rows(db: HQDatabase, limit: int = 100) -> list[dict[str, Any]]:
    """Newest quarantined payloads (reason, claimed node, size), without the payload."""
    rows = db.execute("SELECT received_at, source, claimed_node, reason, detail, size "
                      "FROM hq_quarantine ORDER BY received_at DESC LIMIT ?", [limit]).fetchall()
    keys = ("received_at", "source", "claimed_node", "reason", "detail", "size")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def conflict_rows(db: HQDatabase, limit: int = 100) -> list[dict[str, Any]]:
    """Overwritten concurrent edits awaiting review (values stay encrypted as synced)."""
    rows = db.execute("SELECT tbl, pk, col, clock, winner_clock FROM hq_conflicts "
                      "ORDER BY clock DESC LIMIT ?", [limit]).fetchall()
    keys = ("table", "pk", "column", "clock", "winner_clock")
    return [dict(zip(keys, row, strict=True)) for row in rows]
