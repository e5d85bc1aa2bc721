"""Back-office decisions on applications: checked at HQ before sending, and their fate.

A decision (ready, or rejected with a reason — who sets which status is
sync/merge.py APPLICATION_STATUS_SETTERS) goes down to the node that holds the
application, which HQ knows from its typed projection (`hq_applications.node_id`).
`publish` refuses, with a clear message and nothing queued, a decision HQ can
already see the node could not apply: an unknown reference, a node named that
does not hold it, a status the back office does not set, a rejection without
a reason, or a move the lattice forbids from the status HQ knows (the
projection, raised by every decision already queued and not refused).

What happened to each decision comes from the node's down acks only
(`rows`): `pending` until the node's ack covers its seq, then `refused` when
the ack named it (hq/refusals.py, with the node's reason) and `applied`
otherwise. Nothing is reported applied that the node did not apply.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from hq.downstream import enqueue_in
from hq.store import HQDatabase
from sync.merge import APPLICATION_RANKS, decision_problem

STATES = ("pending", "applied", "refused")
REFUSAL_CODES = ("unknown_reference", "several_nodes", "wrong_node", "already", "no_change",
                 "backwards")


class DecisionRefused(ValueError):
    """A decision HQ will not send: the message says why (no PII); `code` names the case
    (a decision_problem code, or REFUSAL_CODES) and `known` the status HQ knows, for
    screens that say it in the reader's language."""

    def __init__(self, message: str, code: str = "refused", known: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.known = known


@dataclass(frozen=True)
class Queued:
    """A decision queued for a node."""

    node_id: str
    seq: int


def _holder(tx: HQDatabase, reference: str) -> tuple[str, str]:
    """(node id, status) of the application with this reference, from the projection."""
    rows = tx.execute("SELECT node_id, status FROM hq_applications WHERE reference = ? "
                      "ORDER BY node_id LIMIT 2", [reference]).fetchall()
    if not rows:
        raise DecisionRefused(f"unknown application reference {reference}: no node has sent "
                              "HQ an application with it (wait for its center to sync)",
                              "unknown_reference")
    if len(rows) > 1:
        raise DecisionRefused(f"application reference {reference} is held by several nodes "
                              f"({rows[0][0]}, {rows[1][0]}); nothing sent",
                              "several_nodes")
    return str(rows[0][0]), str(rows[0][1])


def _known_status(tx: HQDatabase, node_id: str, reference: str, projected: str) -> str:
    """The highest status HQ knows: the projection's, or a decision queued and not refused."""
    rows = tx.execute(
        "SELECT d.status FROM hq_decisions d LEFT JOIN hq_down_refused r ON "
        "r.node_id = d.node_id AND r.seq = d.seq WHERE d.node_id = ? AND d.reference = ? "
        "AND r.seq IS NULL", [node_id, reference]).fetchall()
    known = projected
    for (status,) in rows:
        if APPLICATION_RANKS.get(status, -1) > APPLICATION_RANKS.get(known, -1):
            known = status
    return known


def check(tx: HQDatabase, reference: str, status: str, reason: str | None,
          node_id: str | None = None) -> str:
    """The node a decision goes to; DecisionRefused when HQ can see it cannot be applied."""
    problem = decision_problem(status, reason)
    if problem is not None:
        raise DecisionRefused(f"decision on {reference} refused: {problem[1]}", problem[0])
    holder, projected = _holder(tx, reference)
    if node_id is not None and node_id != holder:
        raise DecisionRefused(f"application {reference} is held by node {holder}, not "
                              f"{node_id}; leave out --node and HQ routes it", "wrong_node")
    known = _known_status(tx, holder, reference, projected)
    target, current = APPLICATION_RANKS[status], APPLICATION_RANKS.get(known, -1)
    if known == status:
        raise DecisionRefused(f"application {reference} is already {status} (or a decision "
                              "to it is queued); nothing sent", "already", known)
    if target == current:
        raise DecisionRefused(f"application {reference} is {known}; a decision cannot "
                              f"change it to {status}", "no_change", known)
    if target < current:
        raise DecisionRefused(f"application {reference} is {known}; its status never moves "
                              f"back to {status}", "backwards", known)
    return holder


def publish(db: HQDatabase, reference: str, status: str, reason: str | None,
            node_id: str | None = None) -> Queued:
    """Check a decision and queue it for the node holding the application, in one transaction.

    The holding node's row is locked first (PostgreSQL), so two officers deciding at
    once are checked one after the other.
    """
    reason = reason.strip() if reason is not None else None

    def run(tx: HQDatabase) -> Queued:
        holder = check(tx, reference, status, reason, node_id)
        tx.execute("SELECT down_seq FROM hq_nodes WHERE node_id = ?" + tx.lock_clause(),
                   [holder])
        holder = check(tx, reference, status, reason, node_id)  # under the lock
        payload: dict[str, Any] = {"reference": reference, "status": status}
        if reason is not None:
            payload["reason"] = reason
        enqueue_in(tx, "decision", payload, holder)
        seq = tx.execute("SELECT down_seq FROM hq_nodes WHERE node_id = ?",
                         [holder]).fetchone()[0]
        return Queued(holder, int(seq))

    result: Queued = db.retrying(run)
    return result


def rows(db: HQDatabase, refused_only: bool = False, limit: int = 100,
         references: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Decisions, newest first, each with its state from the node's acks (STATES);
    only those on `references` when given."""
    conditions, params = (["r.seq IS NOT NULL"] if refused_only else []), []
    if references is not None:
        refs = sorted(set(references)) or [""]
        conditions.append(f"d.reference IN ({', '.join('?' for _ in refs)})")
        params += refs
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    found = db.execute(
        "SELECT d.node_id, d.seq, d.reference, d.status, d.reason, d.created_at, n.down_acked, "
        "r.reason, r.detail, r.reported_at FROM hq_decisions d "
        "JOIN hq_nodes n ON n.node_id = d.node_id "
        "LEFT JOIN hq_down_refused r ON r.node_id = d.node_id AND r.seq = d.seq "
        f"{where}ORDER BY d.created_at DESC, d.node_id, d.seq DESC LIMIT ?",
        [*params, limit]).fetchall()
    out = []
    for node_id, seq, reference, status, reason, created, acked, code, detail, at in found:
        state = "refused" if code is not None else "applied" if seq <= acked else "pending"
        out.append({"node_id": node_id, "seq": seq, "reference": reference, "status": status,
                    "reason": reason, "queued_at": created, "state": state,
                    "refusal": code, "refusal_detail": detail, "reported_at": at})
    return out
