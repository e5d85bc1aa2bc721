"""Counter and operator routes: counter state, call next and every ticket action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, g

from edge_node.api.routing import api_route, node
from edge_node.api.schema import Field, at_least_one, required_when
from edge_node.api.shapes import INT, STR, arr, nullable, obj
from edge_node.api.visits import CODE, TICKET, UUID
from edge_node.domain import counters, queue
from edge_node.domain.roles import BOARD, MANAGERS, OPERATORS, RECEPTION, STAFF

T = TypeVar("T")
bp = Blueprint("queue", __name__, url_prefix="/api")

COUNTER = obj(id=STR, name=STR, services=arr(STR), state=STR, pause_reason=nullable(STR),
              staff_id=nullable(STR), priority_streak=INT, updated_at=STR)
QUEUE_TICKET = obj(id=STR, number=STR, priority=STR, service_code=STR, enqueued_at=STR,
                   target_counter_id=nullable(STR))
QUEUE = obj(code=STR, queue_prefix=STR, name_en=STR, name_ur=STR, waiting=INT,
            tickets=arr(QUEUE_TICKET))
TRANSFER_FIELDS = [Field("service_code", "string", required=False, pattern=CODE),
                   Field("counter_id", "string", required=False, pattern=UUID)]
BOARD_ROW = obj(id=STR, number=STR, status=STR, called_at=STR, recall_count=INT, counter=STR)


def _act(fn: Callable[..., T], *args: Any) -> T:
    """Run a queue function in the writer as the logged-in staff member."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: fn(db, *args, actor, now))


@api_route(bp, "/counters", "GET", summary="All counters", roles=STAFF,
           response=arr(COUNTER))
def list_counters() -> list[dict[str, Any]]:
    """Counters with state and linked services."""
    return counters.list_counters(node().reader())


@api_route(bp, "/counters", "POST", summary="Create a counter", roles=MANAGERS, status=201,
           response=COUNTER, body=[Field("name", "string", min=1, max=40),
                                   Field("services", "array", min=1, max=64, items="string")])
def create_counter(body: dict[str, Any]) -> dict[str, Any]:
    """A new counter starts closed."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: counters.create_counter(db, body["name"], body["services"], now,
                                                      actor))


@api_route(bp, "/counters/<counter_id>/state", "POST", summary="Open, pause or close a counter",
           roles=OPERATORS, response=COUNTER,
           body=[Field("state", "string", enum=counters.STATES),
                 Field("reason", "string", required=False, enum=counters.PAUSE_REASONS,
                       description="Required when pausing")],
           rules=[required_when("state", ["paused"], "reason")])
def set_counter_state(counter_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Pausing needs a reason; closing needs no ticket at the counter."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: counters.set_state(db, counter_id, body["state"], actor, now,
                                                 body["reason"]))


@api_route(bp, "/counters/<counter_id>/call-next", "POST", roles=OPERATORS,
           summary="Call the next ticket (fair priority interleaving); ticket is null if none",
           response=obj(ticket=nullable(TICKET)))
def call_next(counter_id: str) -> dict[str, Any]:
    """The operator's main button."""
    n, actor = node(), dict(g.staff)
    now, ratio = n.timestamp(), n.settings["priority_ratio"]
    return {"ticket": n.write(lambda db: queue.call_next(db, counter_id, actor, now, ratio))}


@api_route(bp, "/tickets/<ticket_id>/recall", "POST", summary="Announce a called ticket again",
           roles=OPERATORS, response=TICKET)
def recall(ticket_id: str) -> dict[str, Any]:
    """Recall increments the board's counter."""
    return _act(queue.recall, ticket_id)


@api_route(bp, "/tickets/<ticket_id>/no-show", "POST", roles=OPERATORS, response=TICKET,
           summary="Mark a called ticket no-show; it may rejoin within the grace window")
def no_show(ticket_id: str) -> dict[str, Any]:
    """Frees the counter."""
    n, actor = node(), dict(g.staff)
    now, grace = n.now(), n.settings["no_show_grace_minutes"]
    return n.write(lambda db: queue.no_show(db, ticket_id, actor, now, grace))


@api_route(bp, "/tickets/<ticket_id>/rejoin", "POST", roles=RECEPTION | OPERATORS,
           summary="Put a no-show ticket back in line (within the grace window)",
           response=TICKET)
def rejoin(ticket_id: str) -> dict[str, Any]:
    """Back at the original place in line."""
    n, actor = node(), dict(g.staff)
    now = n.now()
    return n.write(lambda db: queue.rejoin(db, ticket_id, actor, now))


@api_route(bp, "/tickets/<ticket_id>/hold", "POST", summary="Park a called ticket at its counter",
           roles=OPERATORS, response=TICKET,
           body=[Field("reason", "string", min=1, max=200)])
def hold(ticket_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The counter may call the next ticket meanwhile."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: queue.hold(db, ticket_id, body["reason"], actor, now))


@api_route(bp, "/tickets/<ticket_id>/resume", "POST", summary="Bring a held ticket back",
           roles=OPERATORS, response=TICKET)
def resume(ticket_id: str) -> dict[str, Any]:
    """Only when the counter has no other called ticket."""
    return _act(queue.resume, ticket_id)


@api_route(bp, "/tickets/<ticket_id>/transfer", "POST", roles=OPERATORS, response=TICKET,
           summary="Send a ticket to another service's queue and/or a specific counter",
           body=TRANSFER_FIELDS, rules=[at_least_one(TRANSFER_FIELDS)])
def transfer(ticket_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Joins the tail of the target queue."""
    n, actor = node(), dict(g.staff)
    now = n.timestamp()
    return n.write(lambda db: queue.transfer(db, ticket_id, actor, now, body["service_code"],
                                             body["counter_id"]))


@api_route(bp, "/tickets/<ticket_id>/complete", "POST", roles=OPERATORS, response=TICKET,
           summary="Finish the current service (the ticket moves on to the next one, if any)")
def complete(ticket_id: str) -> dict[str, Any]:
    """Completing twice is a conflict, not a second completion."""
    return _act(queue.complete, ticket_id)


@api_route(bp, "/queues", "GET", summary="Waiting tickets per queue, in calling order",
           roles=STAFF, response=arr(QUEUE))
def queues() -> list[dict[str, Any]]:
    """Numbers only, no citizen data."""
    return queue.waiting_by_queue(node().reader())


@api_route(bp, "/board", "GET", summary="Called tickets and their counters (display board)",
           roles=BOARD, response=arr(BOARD_ROW))
def board() -> list[dict[str, Any]]:
    """Newest calls first."""
    return queue.board(node().reader())
