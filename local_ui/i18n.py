"""Languages: Flask-Babel with English source strings and an Urdu catalog.

The language of a page is, first to last: `?lang=` (also remembered by the
device in a cookie, for the kiosk and the board), the language picked in this
session, the device cookie on device screens or before login, the staff
member's own `language`, then English.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request, session, url_for
from flask_babel import Babel, force_locale, get_locale, gettext, lazy_gettext

from edge_node.domain import citizens
from edge_node.errors import EdgeError
from local_ui.security import DEVICE_ROLES, current_staff

LANGUAGES = ("en", "ur")
RTL = frozenset({"ur"})
DEVICE_COOKIE = "khidmat_lang"
TRANSLATIONS = Path(__file__).parent / "translations"
COOKIE_MAX_AGE_S = 365 * 24 * 3600

# Domain messages shown often enough at the desk to deserve a translation.
KNOWN_ERRORS = {
    citizens.CNIC_FORMAT: lazy_gettext(
        "CNIC must be 13 digits, written XXXXX-XXXXXXX-X or without dashes."),
    citizens.CNIC_PROVINCE: lazy_gettext("The first digit of a CNIC must be 1 to 7."),
    citizens.CNIC_LAST_ZERO: lazy_gettext("A CNIC never ends in 0."),
    citizens.PHONE_FORMAT: lazy_gettext(
        "Phone must be a Pakistani mobile number, 03XX-XXXXXXX or +923XXXXXXXXX."),
}


def init_app(app: Flask) -> None:
    """Babel over local_ui/translations; language helpers for the templates."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    Babel(app, locale_selector=select_language,
          default_translation_directories=str(TRANSLATIONS))
    app.after_request(remember_device_language)
    app.jinja_env.globals.update(lang=language, text_dir=text_dir, LANGUAGES=LANGUAGES,
                                 in_lang=in_lang, other_lang=other_lang, lang_url=lang_url)
    app.jinja_env.filters["tr"] = localized


def _asked() -> str | None:
    """A valid `?lang=` of this request."""
    asked = request.args.get("lang")
    return asked if asked in LANGUAGES else None


def select_language() -> str:
    """The language of this request (see the module docstring)."""
    asked = _asked()
    if asked:
        session["lang"] = asked
        return asked
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return str(chosen)
    staff = current_staff()
    cookie = request.cookies.get(DEVICE_COOKIE)
    if cookie in LANGUAGES and (staff is None or staff["role"] in DEVICE_ROLES):
        return str(cookie)
    if staff is not None and staff.get("language") in LANGUAGES:
        return str(staff["language"])
    return "en"


def remember_device_language(response: Response) -> Response:
    """`?lang=` sticks to the device (kiosk, board) for a year."""
    asked = _asked()
    if asked and not request.path.startswith("/api/"):
        response.set_cookie(DEVICE_COOKIE, asked, max_age=COOKIE_MAX_AGE_S, httponly=True,
                            samesite="Lax")
    return response


def language() -> str:
    """Code of the current language."""
    if "lang_code" not in g:
        g.lang_code = str(get_locale() or "en")
    return str(g.lang_code)


def text_dir() -> str:
    """`rtl` for Urdu, `ltr` otherwise."""
    return "rtl" if language() in RTL else "ltr"


def localized(row: Any, field: str = "name") -> str:
    """`row[field_ur]` in Urdu (falling back to English), else `row[field_en]`."""
    if row is None:
        return ""
    if language() == "ur" and row.get(f"{field}_ur"):
        return str(row[f"{field}_ur"])
    return str(row.get(f"{field}_en") or row.get(field) or "")


def error_text(exc: EdgeError) -> str:
    """A refusal as shown on a screen: translated when known, else a translated lead-in."""
    messages = [str(KNOWN_ERRORS.get(m, "")) or m for m in exc.errors]
    if all(m in KNOWN_ERRORS for m in exc.errors):
        return " ".join(messages)
    return gettext("Not done: %(reason)s", reason="; ".join(messages))


def in_lang(code: str, message: str) -> str:
    """`message` translated into language `code` whatever the page's language."""
    with force_locale(code):
        return gettext(message)


def other_lang(message: str) -> str:
    """`message` in the other language of the pair (for bilingual boards and tickets)."""
    return in_lang("en" if language() == "ur" else "ur", message)


def lang_url(code: str) -> str:
    """This page in language `code`."""
    args = {**(request.view_args or {}), **request.args.to_dict(), "lang": code}
    return url_for(request.endpoint or "auth.index", **args)
