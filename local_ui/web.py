"""Shared pieces of every screen: static files, navigation, flashes and HTML error pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from edge_node.api import errors as api_errors
from edge_node.domain import roles
from edge_node.errors import EdgeError
from local_ui import i18n
from local_ui.security import DEVICE_ROLES, current_staff, is_api, node

T = TypeVar("T")
bp = Blueprint("ui", __name__, static_folder="static", static_url_path="/assets",
               template_folder="templates")


@dataclass(frozen=True)
class Screen:
    """One entry of the navigation bar."""

    endpoint: str
    label: Any
    roles: frozenset[str]


SCREENS = (
    Screen("reception.desk", _l("Reception"), roles.RECEPTION),
    Screen("operator.console", _l("Counter"), roles.OPERATORS),
    Screen("supervisor.dashboard", _l("Dashboard"), roles.SUPERVISORS | roles.AUDITORS),
    Screen("applications_screen.applications_list", _l("Applications"),
           roles.RECEPTION | roles.OPERATORS | roles.AUDITORS),
    Screen("volunteers_screen.volunteers_page", _l("Volunteers"),
           roles.SUPERVISORS | {"volunteer"}),
    Screen("board.board", _l("Display board"), roles.BOARD),
    Screen("kiosk.kiosk", _l("Feedback kiosk"), roles.FEEDBACK),
    Screen("sync_screen.sync", _l("Sync"), roles.SUPERVISORS | roles.TECHNICIANS),
    Screen("technician.technician", _l("Technician"), roles.TECHNICIANS),
)
HOME = {"receptionist": "reception.desk", "volunteer": "reception.desk",
        "operator": "operator.console", "supervisor": "supervisor.dashboard",
        "manager": "supervisor.dashboard", "auditor": "supervisor.dashboard",
        "technician": "technician.technician", "kiosk": "kiosk.kiosk",
        "display": "board.board"}


def init_app(app: Flask) -> None:
    """Static files and templates, template helpers, HTML error pages outside /api."""
    app.register_blueprint(bp)
    app.jinja_env.globals.update(nav=nav, current_staff=current_staff,
                                 idle_seconds=idle_seconds)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(EdgeError, edge_error)


def nav() -> list[Screen]:
    """Screens the logged-in staff member may open."""
    staff = current_staff()
    if staff is None or staff["role"] in DEVICE_ROLES:
        return []
    return [s for s in SCREENS if staff["role"] in s.roles]


def idle_seconds() -> int:
    """Idle session length, for the page's logout timer."""
    return int(node().settings["session_idle_minutes"]) * 60


def home_url(role: str) -> str:
    """Where a role lands after login."""
    return url_for(HOME.get(role, "auth.login"))


def http_error(exc: HTTPException) -> Any:
    """JSON under /api (the API's one error shape), an HTML page elsewhere."""
    if is_api(request.path):
        return api_errors._http_error(exc)
    status = exc.code or 500
    page = render_template("error.html", status=status, csrf=exc.description == "csrf")
    return page, status, api_errors.protocol_headers(exc)


def edge_error(exc: EdgeError) -> Any:
    """A domain refusal that a screen did not catch."""
    if is_api(request.path):
        return api_errors.error_response(exc.message, exc.status, exc.errors)
    return render_template("error.html", status=exc.status, message=i18n.error_text(exc),
                           csrf=False), exc.status


def attempt(action: Callable[[], T]) -> T | None:
    """Run a domain action; a refusal becomes a flashed, translated message and None."""
    try:
        return action()
    except EdgeError as exc:
        flash(i18n.error_text(exc), "error")
        return None


def back(endpoint: str, **values: Any) -> BaseResponse:
    """Redirect after a POST (post/redirect/get)."""
    return redirect(url_for(endpoint, **values))


def render(template: str, **context: Any) -> Response:
    """Render a screen template into a response."""
    return Response(render_template(template, **context), mimetype="text/html")
