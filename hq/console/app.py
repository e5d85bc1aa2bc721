"""The HQ console app: `create_app(db_url)`, one blueprint per screen.

The cookie-signing key is made once and kept in the store (`hq_meta`), so
sessions survive a restart and every console process of one HQ shares it.
"""

from __future__ import annotations

import secrets
from importlib import import_module
from typing import Any

from flask import Flask, render_template, request
from flask_babel import gettext
from werkzeug.exceptions import HTTPException

from certs.enroll import MAX_FILE_BYTES
from hq.console import i18n, security
from hq.console.views import api
from hq.dbapi import Tx
from hq.store import HQDatabase

SECRET_META = "console_secret"  # noqa: S105 (the hq_meta row name, not a secret)
SCREENS = ("hq.console.views.auth", "hq.console.views.fleet", "hq.console.views.fleet_admin",
           "hq.console.views.actions", "hq.console.views.monitoring",
           "hq.console.views.backoffice", "hq.console.views.staff",
           "hq.console.views.catalog",
           "hq.console.views.api")
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + 16 * 1024  # any console form: a request file + fields


def session_secret(tx: Tx) -> bytes:
    """The console's cookie key from the store (made on first use)."""
    row = tx.execute("SELECT value FROM hq_meta WHERE key = ?", [SECRET_META]).fetchone()
    if row is None:
        value = secrets.token_hex(32)
        tx.execute("INSERT INTO hq_meta (key, value) VALUES (?, ?)", [SECRET_META, value])
        return bytes.fromhex(value)
    return bytes.fromhex(str(row[0]))


def create_app(db_url: str, host: str = "127.0.0.1",
               test_config: dict[str, Any] | None = None,
               keys_dir: str = "./var-hq/keys") -> Flask:
    """The console over the HQ store at `db_url` (opened and migrated here); `keys_dir` is
    HQ's key directory (CA, broker certificates) for enrollment and revocation."""
    db = HQDatabase(db_url)
    app = Flask(__name__)
    app.extensions["hq_store"] = security.Store(db)
    with db.transaction() as tx:
        secret = session_secret(tx)
    app.config.update(HQ_KEYS=keys_dir, MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES)
    security.init_app(app, secret, host)
    i18n.init_app(app)
    if test_config:
        app.config.update(test_config)
    for name in SCREENS:
        app.register_blueprint(import_module(name).bp)
    app.register_error_handler(HTTPException, error_page)
    return app


def error_page(exc: HTTPException) -> tuple[Any, int]:
    """A translated page for 400/403/404/413/429 (never a traceback); JSON under /api/."""
    if request.path.startswith("/api/"):
        return api.http_error(exc)
    texts = {400: gettext("The request was refused (the form may be out of date: reload it)."),
             403: gettext("Your role may not open this page."),
             404: gettext("No such page."),
             413: gettext("The file is too large."),
             429: gettext("Too many failed sign-ins from here; wait a few minutes.")}
    code = exc.code or 500
    message = texts.get(code, gettext("Something went wrong."))
    return render_template("error.html", code=code, message=message), code
