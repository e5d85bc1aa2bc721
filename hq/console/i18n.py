"""Console languages: English source strings and an Urdu catalog (right to left).

Patterned on local_ui/i18n.py: `?lang=` picks the language and the session
remembers it; otherwise English. Catalogs live in hq/console/translations.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, g, request, session, url_for
from flask_babel import Babel, get_locale

LANGUAGES = ("en", "ur")
RTL = frozenset({"ur"})
TRANSLATIONS = Path(__file__).parent / "translations"


def init_app(app: Flask) -> None:
    """Babel over hq/console/translations; language helpers for the templates."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    Babel(app, locale_selector=select_language,
          default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.globals.update(lang=language, text_dir=text_dir, lang_url=lang_url)


def select_language() -> str:
    """`?lang=` (remembered in the session), the session's choice, else English."""
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        session["lang"] = asked
        return str(asked)
    chosen = session.get("lang")
    return str(chosen) if chosen in LANGUAGES else "en"


def language() -> str:
    """Code of the current language."""
    if "lang_code" not in g:
        g.lang_code = str(get_locale() or "en")
    return str(g.lang_code)


def text_dir() -> str:
    """`rtl` for Urdu, `ltr` otherwise."""
    return "rtl" if language() in RTL else "ltr"


def lang_url(code: str) -> str:
    """This page in language `code`."""
    args = {**(request.view_args or {}), **request.args.to_dict(), "lang": code}
    return url_for(request.endpoint or "auth.login", **args)
