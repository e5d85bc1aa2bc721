"""Sync status for the technician and supervisor screens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from edge_node import lifecycle
from edge_node.api.routing import api_route, node
from edge_node.api.shapes import BOOL, INT, NUM, STR, nullable, obj
from edge_node.domain.roles import SUPERVISORS, TECHNICIANS
from edge_node.replication.status import sync_status as read_sync_status

bp = Blueprint("sync", __name__, url_prefix="/api")

SYNC_STATUS = obj(
    count=INT, oldest_age_s=nullable(NUM), bytes_pending=INT, last_seq=nullable(INT),
    acked_seq=INT, down_seq=INT, last_ack_at=nullable(STR), link=STR,
    link_since=nullable(STR), enrolled=BOOL, agent_running=BOOL,
    in_flight_batches=INT,
)


@api_route(bp, "/sync/status", "GET", roles=SUPERVISORS | TECHNICIANS, response=SYNC_STATUS,
           summary="Backlog count, oldest unsent age, bytes pending, last ack, link state")
def sync_status() -> dict[str, Any]:
    """Read from the database, with live figures from the agent when it runs here."""
    return read_sync_status(node(), lifecycle.current_agent()).as_dict()
