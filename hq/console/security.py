"""Console sessions, role guards, CSRF, sign-in throttle and security headers.

Patterned on local_ui/security.py (HQ may not import it): a signed cookie
(HttpOnly, SameSite=Strict, Secure unless served on loopback) holds the
account name, the time of the last request and a CSRF token; each request
re-reads the account, so a deactivated one is out at once. Idle for
IDLE_SECONDS ends the session. Every POST needs the session's CSRF token.
Auditors read only: any non-GET request of theirs is refused (403), except
signing out. Every view states its roles with `screen(...)`; the tests walk the
URL map and fail on a view without one.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from hq.console import accounts, nav
from hq.store import HQDatabase

F = TypeVar("F", bound=Callable[..., Any])
CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "khidmat_hq"
IDLE_SECONDS = 15 * 60
THROTTLE_ATTEMPTS = 10  # failed sign-ins per client address …
THROTTLE_WINDOW_S = 300  # … within this many seconds, then 429 until they age out
PUBLIC = frozenset({"auth.login", "auth.logout", "static", "api.openapi_document"})
API_PREFIX = "/api/"  # bearer tokens, GET only: no session, no CSRF
READ_ONLY_ROLES = frozenset({"auditor"})
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",
}


class Store:
    """The console's one HQ connection, used by one request thread at a time."""

    def __init__(self, db: HQDatabase) -> None:
        self.db = db
        self.lock = threading.Lock()

    @contextmanager
    def use(self) -> Iterator[HQDatabase]:
        """The connection, held for the duration."""
        with self.lock:
            yield self.db


class Throttle:
    """Failed sign-ins per client address in a sliding window."""

    def __init__(self) -> None:
        self.failures: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        """The client's failures still in the window."""
        times = self.failures.setdefault(client, deque())
        while times and times[0] <= now - THROTTLE_WINDOW_S:
            times.popleft()
        return times

    def blocked(self, client: str) -> bool:
        """Too many recent failures from this address."""
        with self.lock:
            return len(self._recent(client, time.monotonic())) >= THROTTLE_ATTEMPTS

    def fail(self, client: str) -> None:
        """Count one failure."""
        with self.lock:
            self._recent(client, time.monotonic()).append(time.monotonic())


def store() -> Store:
    """The running app's store."""
    return cast(Store, current_app.extensions["hq_store"])


def throttle() -> Throttle:
    """The running app's sign-in throttle."""
    return cast(Throttle, current_app.extensions["hq_throttle"])


def init_app(app: Flask, secret: bytes, host: str) -> None:
    """Cookie settings, the session check, CSRF and headers on every request."""
    app.config.update(SECRET_KEY=secret, SESSION_COOKIE_NAME=SESSION_COOKIE,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_SECURE=host not in LOOPBACK)
    app.extensions["hq_throttle"] = Throttle()
    app.before_request(check_csrf)
    app.before_request(refuse_auditor_writes)
    app.after_request(add_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, current_account=current_account,
                                 nav_items=nav.items)


def client() -> str:
    """The client's address (waitress gives the peer; no proxy headers are trusted)."""
    return request.remote_addr or "unknown"


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """Refuse a POST without the session's CSRF token (400)."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.path.startswith(API_PREFIX):
        return
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, given):
        abort(400, description="csrf")


def refuse_auditor_writes() -> None:
    """Auditors read: every request but GET (and signing out) is refused."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.endpoint in PUBLIC:
        return
    account = current_account()
    if account is not None and account["role"] in READ_ONLY_ROLES:
        abort(403)


def add_headers(response: Response) -> Response:
    """Security headers on every response."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def current_account() -> dict[str, Any] | None:
    """The signed-in account, or None (an idle or deactivated session is ended here)."""
    if "account" in g:
        return cast(dict[str, Any] | None, g.account)
    g.account = None
    username, last = session.get("user"), session.get("last")
    if isinstance(username, str) and isinstance(last, int | float):
        if time.time() - last > IDLE_SECONDS:
            end_session(expired=True)
            return None
        with store().use() as db:
            g.account = accounts.get(db, username)
        if g.account is None:
            end_session()
        else:
            session["last"] = int(time.time())
    return cast(dict[str, Any] | None, g.account)


def start_session(username: str) -> None:
    """A fresh session for a new sign-in (new CSRF token: no fixation); language kept."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    session.update(user=username, last=int(time.time()))
    csrf_token()


def end_session(expired: bool = False) -> None:
    """Forget the session (language kept)."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    if expired:
        session["expired"] = True


def screen(roles: Collection[str]) -> Callable[[F], F]:
    """Guard a view: sign in first (redirect), then the role must be in `roles` (403)."""
    allowed = frozenset(roles)
    unknown = allowed - set(accounts.ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            account = current_account()
            if account is None:
                return login_redirect()
            if account["role"] not in allowed:
                abort(403)
            return view(*args, **kwargs)

        wrapper.roles = allowed  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def login_redirect() -> BaseResponse:
    """To the sign-in page, back here afterwards (GET only)."""
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("auth.login", next=target))
