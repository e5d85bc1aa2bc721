"""Application routes: create at the counter, read, list, and move the status up."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from edge_node.api.routing import api_route, node
from edge_node.api.schema import Field
from edge_node.api.shapes import STR, arr, nullable, obj
from edge_node.api.visits import CODE, UUID
from edge_node.domain import applications
from edge_node.domain.roles import AUDITORS, OPERATORS, RECEPTION

bp = Blueprint("applications", __name__, url_prefix="/api")

READERS = RECEPTION | OPERATORS | AUDITORS
REFERENCE = r"[A-Za-z0-9][A-Za-z0-9/_-]{0,63}"
APPLICATION = obj(
    id=STR, reference=STR, ticket_id=nullable(STR), citizen_id=nullable(STR), service_code=STR,
    agency_code=STR, agency_reference=nullable(STR), fee_reference=nullable(STR),
    documents_seen=arr(STR), status=STR, status_hlc=nullable(STR), created_by=nullable(STR),
    created_at=STR, updated_at=STR, notes=nullable(STR), decision_reason=nullable(STR),
    decided_at=nullable(STR),
)
CREATE_BODY = [
    Field("service_code", "string", pattern=CODE),
    Field("ticket_id", "string", required=False, pattern=UUID,
          description="The ticket being served (usual); its visit's citizen is used by default"),
    Field("citizen_id", "string", required=False, pattern=UUID),
    Field("agency_reference", "string", required=False, pattern=REFERENCE,
          description="The agency's own tracking number"),
    Field("fee_reference", "string", required=False, pattern=REFERENCE,
          description="PSID or challan number of the cashless payment"),
    Field("documents_seen", "array", required=False, max=30, items="string", unique=True,
          description="Document codes from the service's checklist, each once"),
]


@api_route(bp, "/applications", "POST", summary="Create an application at the counter",
           roles=OPERATORS, status=201, response=APPLICATION, body=CREATE_BODY)
def create_application(body: dict[str, Any]) -> dict[str, Any]:
    """Starts as submitted, with a reference numbered for this node and day."""
    n, actor = node(), dict(g.staff)
    now, day = n.timestamp(), n.today()
    return n.write(lambda db: applications.create_application(
        db, body, actor=actor, now=now, day=day, center_id=n.center_id, node_id=n.node_id))


@api_route(bp, "/applications", "GET", summary="Applications, newest first (at most 200)",
           roles=READERS, response=arr(APPLICATION),
           query=[Field("status", "string", required=False, enum=applications.STATUSES),
                  Field("ticket_id", "string", required=False, pattern=UUID)])
def list_applications(query: dict[str, Any]) -> list[dict[str, Any]]:
    """Filtered by status and/or ticket."""
    return applications.list_applications(node().reader(), query["status"], query["ticket_id"])


@api_route(bp, "/applications/<application_id>", "GET", summary="One application",
           roles=READERS, response=APPLICATION)
def get_application(application_id: str) -> dict[str, Any]:
    """By id."""
    return applications.get_application(node().reader(), application_id)


@api_route(bp, "/applications/by-reference/<reference>", "GET", roles=READERS,
           summary="One application by its reference number", response=APPLICATION)
def by_reference(reference: str) -> dict[str, Any]:
    """What the citizen quotes when asking whether it is ready."""
    return applications.get_by_reference(node().reader(), reference)


@api_route(bp, "/applications/<application_id>/status", "POST", roles=OPERATORS,
           summary="Move the status up (operators hand over ready ones; the rest needs a "
                   "supervisor)", response=APPLICATION,
           body=[Field("status", "string", enum=applications.STATUSES),
                 Field("note", "string", required=False, min=1, max=500)])
def set_status(application_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A backward or same-rank move is a 409."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: applications.set_status(
        db, application_id, body["status"], body["note"], actor, now))
