"""Feedback routes: the tablet rates a served ticket; supervisors read a day's ratings."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from edge_node.api.routing import api_route, node
from edge_node.api.schema import Field
from edge_node.api.shapes import INT, STR, arr, nullable, obj
from edge_node.api.visits import UUID
from edge_node.domain import feedback, volunteer_shifts
from edge_node.domain.roles import FEEDBACK, SUPERVISORS

bp = Blueprint("feedback", __name__, url_prefix="/api")

DATE = volunteer_shifts.DATE_PATTERN


def date_field(name: str, required: bool = True) -> Field:
    """A YYYY-MM-DD date that exists (the pattern gives the shape, `format: date` the rest)."""
    return Field(name, "string", required=required, pattern=DATE, format="date",
                 description="YYYY-MM-DD, a day of the calendar")
FEEDBACK_ROW = obj(
    id=STR, ticket_id=STR, rating=INT, comment=nullable(STR), service_code=nullable(STR),
    counter_id=nullable(STR), staff_id=nullable(STR), created_at=STR,
)


@api_route(bp, "/feedback", "POST", summary="Rate a served ticket (once per ticket)",
           roles=FEEDBACK, status=201, response=FEEDBACK_ROW,
           body=[Field("ticket_id", "string", pattern=UUID),
                 Field("rating", "integer", min=1, max=5, description="1 (poor) to 5 (excellent)"),
                 Field("comment", "string", required=False, max=feedback.COMMENT_MAX_CHARS)])
def give_feedback(body: dict[str, Any]) -> dict[str, Any]:
    """Linked to the ticket's last completed service, counter and operator."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: feedback.give_feedback(
        db, body["ticket_id"], body["rating"], body["comment"], actor, now))


@api_route(bp, "/feedback", "GET", summary="Feedback on the tickets of a day (default today)",
           roles=SUPERVISORS, response=arr(FEEDBACK_ROW),
           query=[date_field("date", required=False)])
def list_feedback(query: dict[str, Any]) -> list[dict[str, Any]]:
    """Oldest first."""
    n = node()
    return feedback.list_feedback(n.reader(), query["date"] or n.today())
