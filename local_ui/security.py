"""Cookie sessions over the domain's staff sessions, role guards, CSRF and security headers.

The Flask session cookie (signed, HttpOnly, SameSite=Lax) holds only the
domain session token and a CSRF token; who is logged in, idle logout and
lockout all come from `edge_node.domain.staff`, exactly as for the JSON API.

CSRF is a per-session random token checked on every UI POST (a hidden form
field, or the X-CSRF-Token header for the few fetch calls). Flask-WTF would do
the same but brings WTForms, which the screens do not use: these 20 lines are
easier to audit than a form framework.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, g, redirect, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from edge_node import lifecycle
from edge_node.domain import staff as staff_domain
from edge_node.errors import AuthError
from edge_node.node import Node

F = TypeVar("F", bound=Callable[..., Any])
DEVICE_ROLES = frozenset({"kiosk", "display"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_COOKIE = "khidmat_ui"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; media-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def session_secret(node: Node) -> bytes:
    """A cookie-signing key derived from the node key: sessions survive a restart."""
    return hmac.new(node.keys.db_key, b"khidmat-edge local_ui session v1",
                    hashlib.sha256).digest()


def init_app(app: Flask, node: Node) -> None:
    """Session cookie settings, CSRF check and headers on every response."""
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = session_secret(node)
    app.config.update(SESSION_COOKIE_NAME=SESSION_COOKIE, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    app.before_request(check_csrf)
    app.after_request(add_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token


def is_api(path: str) -> bool:
    """JSON API paths use bearer tokens, not cookies: no CSRF there."""
    return path.startswith("/api/")


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """Refuse a UI POST without the session's CSRF token (400)."""
    if request.method != "POST" or is_api(request.path):
        return
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, given):
        abort(400, description="csrf")


def add_headers(response: Response) -> Response:
    """Security headers; pages with a session are never cached."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not is_api(request.path) and not request.path.startswith("/assets/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def node() -> Node:
    """The Node of the running app."""
    return lifecycle.current_node()


def current_staff() -> dict[str, Any] | None:
    """The logged-in staff member, or None (an idle-expired session is ended here)."""
    if "staff" in g:
        return _staff_of_request()
    token = session.get("token")
    g.staff = None
    if isinstance(token, str):
        n = node()
        now = n.now()
        try:
            found, stale = staff_domain.session_staff(
                n.reader(), token, now, n.settings["session_idle_minutes"])
        except AuthError:
            end_session(expired=True)
            return None
        if stale and not _passive(found):
            n.write(lambda db: staff_domain.touch_session(db, token, now))
        g.staff = found
    return _staff_of_request()


def _staff_of_request() -> dict[str, Any] | None:
    """What current_staff() stored on `g` for this request (a staff row or None)."""
    staff: dict[str, Any] | None = g.staff
    return staff


def _passive(staff: dict[str, Any]) -> bool:
    """A live stream on a staff screen is not activity (else no staff page would idle out);
    on the board and kiosk it is what keeps the device logged in."""
    streaming = request.headers.get("Accept") == "text/event-stream"
    return streaming and staff["role"] not in DEVICE_ROLES


def end_session(expired: bool = False) -> None:
    """Forget the cookie session (the CSRF token is renewed too)."""
    lang = session.get("lang")
    session.clear()
    if expired:
        session["expired"] = True
    if lang:
        session["lang"] = lang


def start_session(token: str) -> None:
    """A fresh cookie session for a new login (new CSRF token: no fixation).

    A language picked on the login page is kept; otherwise the staff member's own applies.
    """
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    session["token"] = token
    csrf_token()


def screen(roles: Collection[str]) -> Callable[[F], F]:
    """Guard a view: log in first (redirect), then the role must be in `roles` (403)."""
    allowed = frozenset(roles)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            staff = current_staff()
            if staff is None:
                return login_redirect()
            if staff["role"] not in allowed:
                abort(403)
            return view(*args, **kwargs)

        wrapper.roles = allowed  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def login_redirect() -> BaseResponse:
    """To the login page, back here afterwards (GET only; a POST would be replayed)."""
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    if request.headers.get("Accept") == "text/event-stream":
        abort(401)
    return redirect(url_for("auth.login", next=target))
