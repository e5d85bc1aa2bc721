"""The feedback kiosk (tablet): the citizen rates the ticket just served (or types its number).

The device keeps its language and its counter in cookies (`?lang=ur`, `?counter=<id>`),
so a tablet set up once stays set up.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, request
from flask_babel import gettext
from sqlite_utils import Database
from werkzeug.wrappers import Response

from edge_node.domain import counters, feedback, tickets
from edge_node.domain.citizens import western_digits
from edge_node.domain.roles import FEEDBACK
from local_ui.lookups import minutes_since
from local_ui.security import current_staff, node, screen
from local_ui.web import attempt, render

bp = Blueprint("kiosk", __name__)
KIOSK_COUNTER_COOKIE = "khidmat_kiosk_counter"
COOKIE_MAX_AGE_S = 365 * 24 * 3600
RATE_WINDOW_MIN = 15  # a ticket completed this recently at the kiosk's counter is offered
THANKS_RESET_S = 8
IDLE_RESET_S = 60
_NUMBER = re.compile(r"([A-Z]{1,3})-?([0-9]{1,4})")


def _kiosk_counter(db: Database) -> dict[str, Any] | None:
    """The counter this tablet stands at (`?counter=` remembered by the device)."""
    chosen = request.args.get("counter") or request.cookies.get(KIOSK_COUNTER_COOKIE)
    for counter in counters.list_counters(db):
        if counter["id"] == chosen:
            return counter
    return None


def _pending(db: Database, counter: dict[str, Any] | None) -> dict[str, Any] | None:
    """The latest ticket served at this counter in the last minutes and not yet rated."""
    if counter is None:
        return None
    latest = feedback.latest_unrated(db, counter["id"])
    if latest and latest["completed_at"] and \
            minutes_since(latest["completed_at"]) <= RATE_WINDOW_MIN:
        return latest
    return None


@bp.get("/kiosk")
@screen(FEEDBACK)
def kiosk() -> Response:
    """Big 1-5 buttons for the ticket just served (or one the citizen types)."""
    db = node().reader()
    counter = _kiosk_counter(db)
    response = render("kiosk.html", counter=counter, pending=_pending(db, counter),
                      counters=counters.list_counters(db), idle_reset_s=IDLE_RESET_S)
    if request.args.get("counter") and counter is not None:
        response.set_cookie(KIOSK_COUNTER_COOKIE, counter["id"], max_age=COOKIE_MAX_AGE_S,
                            httponly=True, samesite="Lax")
    return response


def normalise_number(raw: str) -> str | None:
    """`a17`, `A-017` or `A-۰۱۷` as `A-017`; None when it is not a ticket number."""
    match = _NUMBER.fullmatch(western_digits(raw).strip().upper())
    return f"{match.group(1)}-{int(match.group(2)):03d}" if match else None


def _ticket_id(db: Database, number: str | None) -> str | None:
    """Today's ticket with that number."""
    return None if number is None else tickets.ticket_id_by_number(db, number, node().today())


@bp.post("/kiosk/rate")
@screen(FEEDBACK)
def rate() -> Response:
    """Record the rating, thank the citizen; the page resets itself."""
    n = node()
    form = request.form
    ticket_id = form.get("ticket_id") or _ticket_id(
        n.reader(), normalise_number(form.get("number", "")))
    rating = int(form["rating"]) if form.get("rating", "").isdigit() else 0
    comment = form.get("comment") or None
    if ticket_id is None:
        return render("kiosk_done.html", ok=False, reset_s=THANKS_RESET_S,
                      message=gettext("We could not find that ticket number for today."))
    actor, now = dict(current_staff() or {}), n.timestamp()
    saved = attempt(lambda: n.write(lambda db: feedback.give_feedback(
        db, ticket_id, rating, comment, actor, now)))
    return render("kiosk_done.html", ok=saved is not None, reset_s=THANKS_RESET_S,
                  message=None)
