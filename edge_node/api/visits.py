"""Reception routes: create a visit (and its ticket), read visits and tickets."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from edge_node.api.routing import api_route, node
from edge_node.api.schema import Field
from edge_node.api.shapes import INT, STR, arr, nullable, obj
from edge_node.domain import visits
from edge_node.domain.roles import RECEPTION, STAFF

bp = Blueprint("visits", __name__, url_prefix="/api")

CODE = r"[a-z0-9_]{1,64}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

TICKET = obj(
    id=STR, visit_id=STR, number=STR, queue_prefix=STR, daily_number=INT, business_date=STR,
    priority=STR, priority_weight=INT, status=STR, queue_code=STR, service_code=STR,
    counter_id=nullable(STR), staff_id=nullable(STR), target_counter_id=nullable(STR),
    enqueued_at=STR, order_key=INT, called_at=nullable(STR), recall_count=INT,
    rejoin_until=nullable(STR), hold_reason=nullable(STR), issued_at=STR, updated_at=STR,
    completed_at=nullable(STR),
)
VISIT = obj(
    id=STR, citizen_id=nullable(STR), business_date=STR, priority=STR, status=STR,
    services=arr(STR), missing_documents=arr(STR), created_by=nullable(STR), created_at=STR,
    closed_at=nullable(STR),
)

VISIT_BODY = [
    Field("services", "array", min=1, max=visits.MAX_SERVICES_PER_VISIT, items="string",
          unique=True, description="Service codes, each once, in the order they will be served"),
    Field("priority", "string", required=False, pattern=CODE,
          description="Priority class code (default: normal)"),
    Field("citizen_id", "string", required=False, pattern=UUID),
    Field("missing_documents", "array", required=False, max=50, items="string",
          description="Document codes the citizen lacks; ends the visit without a ticket"),
]


@api_route(bp, "/visits", "POST", summary="Register a visit and issue its ticket",
           roles=RECEPTION, body=VISIT_BODY, status=201,
           response=obj(visit=VISIT, ticket=nullable(TICKET)))
def create_visit(body: dict[str, Any]) -> dict[str, Any]:
    """Reception's main action; one write, one transaction."""
    n, actor = node(), dict(g.staff)
    now, day = n.timestamp(), n.today()
    return n.write(lambda db: visits.create_visit(
        db, services=body["services"], priority=body["priority"] or "normal",
        citizen_id=body["citizen_id"], missing_documents=body["missing_documents"] or [],
        actor=actor, now=now, day=day))


@api_route(bp, "/tickets/<ticket_id>", "GET", summary="One ticket", roles=STAFF,
           response=TICKET)
def get_ticket(ticket_id: str) -> dict[str, Any]:
    """Read from this thread's reader connection."""
    return visits.get_ticket(node().reader(), ticket_id)


