"""Supervisor reports: live KPIs and stored daily snapshots."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from edge_node.api.feedback import date_field
from edge_node.api.routing import api_route, node
from edge_node.api.shapes import INT, NUM, STR, arr, nullable, obj
from edge_node.domain import kpi
from edge_node.domain.roles import AUDITORS, SUPERVISORS

bp = Blueprint("reports", __name__, url_prefix="/api")

SECONDS = nullable(NUM)
KPI = obj(
    business_date=STR,
    queues=arr(obj(code=STR, queue_prefix=STR, waiting=INT, longest_wait_s=NUM)),
    issued=INT, served=INT, completed_visits=INT, no_shows=INT, transfers=INT,
    missing_documents=INT, wait_p50_s=SECONDS, wait_p90_s=SECONDS, service_p50_s=SECONDS,
    service_p90_s=SECONDS, within_standard_pct=SECONDS,
    ratings={"type": "object", "additionalProperties": {"type": "integer"}},
    feedback_count=INT, satisfaction_pct=SECONDS,
)


@api_route(bp, "/kpi", "GET", summary="Live KPIs of a business day (default today)",
           roles=SUPERVISORS | AUDITORS, response=KPI,
           query=[date_field("date", required=False)])
def live_kpi(query: dict[str, Any]) -> dict[str, Any]:
    """Computed on the reader connection: never blocks the writer."""
    n = node()
    return kpi.compute(n.reader(), query["date"] or n.today(), n.now())
