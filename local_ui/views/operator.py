"""The operator's counter console: counter state, call next and every ticket action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, render_template, request, session
from flask_babel import gettext
from sqlite_utils import Database
from werkzeug.wrappers import Response

from edge_node.domain import citizens, counters, queue, tickets
from edge_node.domain.roles import OPERATORS
from edge_node.errors import EdgeError
from local_ui import live
from local_ui.lookups import catalog, local_time, minutes_since
from local_ui.security import current_staff, node, screen
from local_ui.web import attempt, back, render

bp = Blueprint("operator", __name__)
RECENT_LIMIT = 5
NO_SHOW_LIMIT = 10
HOLD_REASON_MAX = 200


def _counter_id(db: Database) -> str | None:
    """The counter this browser works at (`?counter=`, remembered in the session)."""
    asked = request.args.get("counter")
    known = {c["id"] for c in counters.list_counters(db)}
    if asked in known:
        session["counter"] = asked
    chosen = session.get("counter")
    return chosen if chosen in known else None


def _with_details(db: Database, ticket: dict[str, Any]) -> dict[str, Any]:
    """A ticket with its services and, when known, its citizen."""
    citizen_id, citizen = tickets.visit_citizen_id(db, ticket["visit_id"]), None
    if citizen_id is not None:
        try:
            citizen = citizens.get_citizen(db, node().keys, citizen_id)
        except EdgeError:
            citizen = None
    return {**ticket, "services": tickets.ticket_services(db, ticket["id"]), "citizen": citizen,
            "called": local_time(ticket["called_at"]),
            "minutes": minutes_since(ticket["called_at"])}


def _waiting(db: Database, counter: dict[str, Any]) -> list[dict[str, Any]]:
    """Queues this counter serves, with how many wait for it."""
    serves = set(counter["services"])
    out = []
    for q in queue.waiting_by_queue(db):
        mine = [t for t in q["tickets"] if t["service_code"] in serves
                and t["target_counter_id"] in (None, counter["id"])]
        if mine:
            out.append({**q, "mine": len(mine), "next": mine[0]["number"]})
    return out


def _console(counter_id: str | None) -> dict[str, Any]:
    """Everything the console shows for one counter."""
    n = node()
    db = n.reader()
    all_counters = counters.list_counters(db)
    context: dict[str, Any] = {"counters": all_counters, "counter": None,
                               "reasons": counters.PAUSE_REASONS}
    if counter_id is None:
        return context
    counter = next(c for c in all_counters if c["id"] == counter_id)
    called = tickets.at_counter(db, counter_id, "called")
    context.update(
        counter=counter, current=_with_details(db, called[0]) if called else None,
        held=[_with_details(db, t) for t in tickets.at_counter(db, counter_id, "held")],
        recent=tickets.recently_served(db, counter_id, n.today(), RECENT_LIMIT),
        waiting=_waiting(db, counter), no_shows=tickets.no_shows(db, n.today(), NO_SHOW_LIMIT),
        catalog=catalog(db))
    return context


@bp.get("/operator")
@screen(OPERATORS)
def console() -> Response:
    """The console of the chosen counter (or the counter picker)."""
    return render("operator.html", **_console(_counter_id(node().reader())))


@bp.get("/operator/live")
@screen(OPERATORS)
def live_queue() -> Response:
    """SSE: the waiting figures of this counter's queues."""
    counter_id = _counter_id(node().reader())

    def fragment() -> str:
        return render_template("_operator_waiting.html", **_console(counter_id))

    return live.stream(fragment)


def _act(fn: Callable[[Database, dict[str, Any]], Any], done: str | None = None) -> Response:
    """Run a counter or ticket action as the logged-in operator, then back to the console."""
    n, actor = node(), dict(current_staff() or {})
    result = attempt(lambda: n.write(lambda db: fn(db, actor)))
    if result is not None and done:
        flash(done, "ok")
    return back("operator.console")


@bp.post("/operator/counter/<counter_id>/state")
@screen(OPERATORS)
def set_state(counter_id: str) -> Response:
    """Open, pause (with a reason) or close the counter."""
    state, reason = request.form.get("state", ""), request.form.get("reason") or None
    now = node().timestamp()
    return _act(lambda db, actor: counters.set_state(db, counter_id, state, actor, now, reason))


@bp.post("/operator/counter/<counter_id>/call-next")
@screen(OPERATORS)
def call_next(counter_id: str) -> Response:
    """Call the next ticket; say so when nobody is waiting."""
    n, actor = node(), dict(current_staff() or {})
    now, ratio = n.timestamp(), n.settings["priority_ratio"]
    called = attempt(lambda: n.write(lambda db: queue.call_next(db, counter_id, actor, now,
                                                                  ratio) or {}))
    if called == {}:
        flash(gettext("Nobody is waiting for this counter."), "info")
    return back("operator.console")


@bp.post("/operator/tickets/<ticket_id>/<action>")
@screen(OPERATORS)
def ticket_action(ticket_id: str, action: str) -> Response:
    """Recall, no-show, rejoin, hold, resume, transfer or complete a ticket."""
    n = node()
    form = request.form
    stamp, moment, grace = n.timestamp(), n.now(), n.settings["no_show_grace_minutes"]
    actions: dict[str, Callable[[Database, dict[str, Any]], Any]] = {
        "recall": lambda db, a: queue.recall(db, ticket_id, a, stamp),
        "no-show": lambda db, a: queue.no_show(db, ticket_id, a, moment, grace),
        "rejoin": lambda db, a: queue.rejoin(db, ticket_id, a, moment),
        "hold": lambda db, a: queue.hold(
            db, ticket_id, (form.get("reason", "").strip() or gettext("On hold"))
            [:HOLD_REASON_MAX], a, stamp),
        "resume": lambda db, a: queue.resume(db, ticket_id, a, stamp),
        "transfer": lambda db, a: queue.transfer(
            db, ticket_id, a, stamp, form.get("service_code") or None,
            form.get("counter_id") or None),
        "complete": lambda db, a: queue.complete(db, ticket_id, a, stamp),
    }
    if action not in actions:
        flash(gettext("Unknown action."), "error")
        return back("operator.console")
    return _act(actions[action], gettext("Done.") if action != "complete"
                else gettext("Service completed."))
