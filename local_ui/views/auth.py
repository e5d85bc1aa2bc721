"""Login, logout, the landing redirect and the idle-timer keep-alive."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Response

from edge_node.api import sessions
from edge_node.api.errors import edge_headers
from edge_node.api.routing import client_address
from edge_node.domain import staff as staff_domain
from edge_node.errors import EdgeError, LockedError, ThrottledError
from local_ui.security import current_staff, end_session, node, start_session
from local_ui.web import home_url

bp = Blueprint("auth", __name__)
FIELD_MAX_CHARS = 256


# What a browser's URL parser (WHATWG) drops before it reads a URL: tab, LF and CR anywhere,
# C0 controls and spaces at either end. It also reads a backslash as a slash.
_DROPPED = str.maketrans("", "", "\t\n\r")
_EDGES = "".join(chr(c) for c in range(0x21))


def safe_next(target: str | None) -> str | None:
    """A same-site path to go to after login, or None (no open redirect).

    The check runs on the URL as a browser will read it, and that normalised
    form is what is returned: a tab or a backslash between two slashes can not
    turn the path into the scheme-relative `//evil.example` after the check.
    """
    if not target:
        return None
    seen = target.translate(_DROPPED).strip(_EDGES).replace("\\", "/")
    if not seen.startswith("/") or seen.startswith("//"):
        return None
    if any(unicodedata.category(ch) == "Cc" for ch in seen):
        return None
    parts = urlsplit(seen)
    if parts.scheme or parts.netloc:
        return None
    return iri_to_uri(seen)


@bp.get("/")
def index() -> Response:
    """The logged-in staff member's own screen, or the login page."""
    staff = current_staff()
    if staff is None:
        return redirect(url_for("auth.login"))
    return redirect(home_url(staff["role"]))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Username and password against the local hashes; failures count toward lockout."""
    expired = bool(session.pop("expired", False))
    if request.method == "GET":
        return render_template("login.html", expired=expired, error=None)
    username = request.form.get("username", "")[:FIELD_MAX_CHARS]
    password = request.form.get("password", "")[:FIELD_MAX_CHARS]
    result = sessions.login(node(), username, password, client_address())
    if isinstance(result, EdgeError):
        return render_template("login.html", expired=False, error=_refusal_text(result),
                               username=username), result.status, edge_headers(result)
    start_session(result["token"])
    target = safe_next(request.args.get("next"))
    return redirect(target or home_url(result["staff"]["role"]))


def _refusal_text(refusal: EdgeError) -> str:
    """What the login page says about a refused login."""
    if isinstance(refusal, ThrottledError):
        return gettext("Too many failed logins from this device. Wait %(seconds)s seconds "
                       "and try again.", seconds=refusal.retry_after_s)
    if isinstance(refusal, LockedError):
        return gettext("This account is locked after repeated failed logins. Try again "
                       "later.")
    return gettext("Wrong username or password.")


@bp.post("/logout")
def logout() -> Response:
    """End the domain session and the cookie; `idle=1` says why on the login page."""
    token = session.get("token")
    staff = current_staff()
    if isinstance(token, str) and staff is not None:
        sessions.end_session(node(), token, staff)
    end_session(expired=request.form.get("idle") == "1")
    return redirect(url_for("auth.login"))


@bp.post("/session/ping")
def ping() -> Any:
    """The page saw keyboard or pointer activity: keep the session alive."""
    staff = current_staff()
    if staff is None:
        return jsonify({"ok": False}), 401
    n = node()
    token = str(session["token"])
    now = n.now()
    n.write(lambda db: staff_domain.touch_session(db, token, now))
    return jsonify({"ok": True})
