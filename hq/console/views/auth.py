"""Sign-in (password and TOTP code), sign-out and the home page."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_babel import gettext
from werkzeug.wrappers import Response as BaseResponse

from hq.console import accounts, actions, nav, security

bp = Blueprint("auth", __name__)
MAX_FIELD = 200


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("auth.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | BaseResponse | tuple[str, int]:
    """The sign-in form; a POST checks password and code, audited either way."""
    if request.method == "GET":
        return render_template("login.html", expired=session.pop("expired", False))
    client = security.client()
    username = request.form.get("username", "").strip().lower()[:MAX_FIELD]
    if security.throttle().blocked(client):
        with security.store().use() as db, db.transaction() as tx:
            actions.record(tx, username or "-", "sign_in", None, "throttled", client)
        abort(429)
    password = request.form.get("password", "")[:MAX_FIELD]
    code = request.form.get("code", "")[:MAX_FIELD]
    with security.store().use() as db, db.transaction() as tx:
        result = accounts.sign_in(tx, username, password, code)
        actions.record(tx, username or "-", "sign_in", None, result.reason, client)
    if result.account is None:
        security.throttle().fail(client)
        message = gettext("This account is locked for a while after too many failed "
                          "sign-ins.") if result.reason in ("locked", "locked_now") else \
            gettext("Username, password or code is wrong.")
        return render_template("login.html", error=message, username=username), 401
    security.start_session(username)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> BaseResponse:
    """End the session (audited when there was one)."""
    account = security.current_account()
    if account is not None:
        with security.store().use() as db, db.transaction() as tx:
            actions.record(tx, account["username"], "sign_out", None, "ok", security.client())
    security.end_session()
    return redirect(url_for("auth.login"))


@bp.get("/")
@security.screen(nav.EVERYONE)
def index() -> str:
    """Home: who is signed in and the screens of this role."""
    account = security.current_account()
    return render_template("home.html", items=nav.items(account),
                           role_name=nav.ROLE_NAMES[account["role"]] if account else "")
