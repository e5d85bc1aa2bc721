"""Sync status: the one computation behind `edge-node sync status`, `/api/sync/status`,
the Sync and Technician screens and the doctor's backlog check (they only format it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from edge_node.paths import is_enrolled
from edge_node.replication.port import NodeView, summary

# Figures only an agent running in the asking process knows.
LIVE_FIELDS = ("agent_running", "in_flight_batches")


class LiveAgent(Protocol):
    """The part of sync.agent.Agent read here."""

    def status(self) -> dict[str, Any]:
        """Live figures: link, in_flight_batches, ..."""


@dataclass(frozen=True)
class SyncStatus:
    """Backlog, acks, link and enrolment of one node."""

    count: int  # records HQ has not acknowledged
    oldest_age_s: float | None  # age of the oldest of them
    bytes_pending: int
    last_seq: int | None  # newest outbox seq (None: outbox empty)
    acked_seq: int  # highest seq HQ acknowledged
    down_seq: int  # highest downstream seq applied
    last_ack_at: str | None
    link: str  # online, offline or never-connected
    link_since: str | None
    enrolled: bool
    agent_running: bool  # an agent runs in this process
    in_flight_batches: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def sync_status(node: NodeView, agent: LiveAgent | None = None) -> SyncStatus:
    """Read from the node's database; the link and batches in flight come from `agent`
    when one runs in this process (the database holds the link as last recorded)."""
    recorded = summary(node)
    live = agent.status() if agent is not None else {}
    return SyncStatus(
        count=recorded["count"], oldest_age_s=recorded["oldest_age_s"],
        bytes_pending=recorded["bytes_pending"], last_seq=recorded["last_seq"],
        acked_seq=recorded["acked_seq"], down_seq=recorded["down_seq"],
        last_ack_at=recorded["last_ack_at"], link=live.get("link", recorded["link"]),
        link_since=recorded["link_since"], enrolled=is_enrolled(node.settings),
        agent_running=agent is not None,
        in_flight_batches=int(live.get("in_flight_batches", 0)))
