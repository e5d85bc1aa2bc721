"""The Urdu catalog is complete: every UI string extracted from the code and templates has a
translation, nothing is fuzzy, placeholders match, and the compiled .mo is up to date."""

from __future__ import annotations

import gettext
import io
import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from local_ui.i18n import LANGUAGES

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "local_ui"
PO = UI / "translations" / "{lang}" / "LC_MESSAGES" / "messages.po"
# Same keywords as the extraction command in local_ui/babel.cfg.
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None,
            "other_lang": None, "in_lang": (2,)}
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|%%")


def extracted() -> set[str]:
    """Every msgid in local_ui, extracted the way `pybabel extract` does."""
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(UI), METHODS, keywords=KEYWORDS):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


def catalog(lang: str) -> Catalog:
    """A committed .po catalog."""
    with open(str(PO).format(lang=lang), "rb") as handle:
        return read_po(handle, locale=lang)


@pytest.fixture(scope="module")
def msgids() -> set[str]:
    """The strings of the UI."""
    found = extracted()
    assert len(found) > 200, "extraction found too little; check the keywords"
    return found


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_catalog_is_complete(msgids: set[str], lang: str) -> None:
    """No string is missing, empty or fuzzy; no stale entries linger."""
    po = catalog(lang)
    entries = {m.id: m for m in po if m.id}
    missing = sorted(msgids - set(entries))
    assert not missing, f"{lang}: untranslated strings (run the update in README): {missing}"
    empty = sorted(i for i, m in entries.items() if not m.string)
    assert not empty, f"{lang}: empty translations: {empty}"
    fuzzy = sorted(i for i, m in entries.items() if m.fuzzy)
    assert not fuzzy and not po.fuzzy, f"{lang}: fuzzy translations: {fuzzy}"
    stale = sorted(set(entries) - msgids)
    assert not stale, f"{lang}: entries no longer used: {stale}"


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_placeholders_match(lang: str) -> None:
    """A translation keeps the same %(name)s placeholders, or formatting would crash."""
    for message in catalog(lang):
        if message.id and isinstance(message.id, str):
            assert sorted(_PLACEHOLDER.findall(message.id)) == \
                sorted(_PLACEHOLDER.findall(str(message.string))), message.id


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_compiled_catalog_is_up_to_date(lang: str) -> None:
    """The committed .mo says what the .po says (compile with `pybabel compile`)."""
    buffer = io.BytesIO()
    write_mo(buffer, catalog(lang))
    fresh = gettext.GNUTranslations(io.BytesIO(buffer.getvalue()))
    mo_path = Path(str(PO).format(lang=lang)).with_suffix(".mo")
    with mo_path.open("rb") as handle:
        committed = gettext.GNUTranslations(handle)
    for message in catalog(lang):
        if isinstance(message.id, str):
            if message.id:
                assert committed.gettext(message.id) == fresh.gettext(message.id), message.id
        else:
            singular, plural = message.id[0], message.id[1]
            for n in (1, 2, 5):
                assert committed.ngettext(singular, plural, n) == \
                    fresh.ngettext(singular, plural, n), singular
