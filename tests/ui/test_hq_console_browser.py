"""The HQ console in a real browser (Playwright driving Debian's chromium) against waitress:
a demo store, sign-in with password and TOTP by keyboard, the fleet screen in English and
Urdu (right to left), an agency officer deciding in the back office and kept to their own
agency, an auditor finding nothing that changes anything, and every screen in both
languages, screenshots in test-output/screenshots/."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from waitress.server import create_server

from hq import projections
from hq.console import demo
from hq.console.app import create_app
from hq.store import HQDatabase

pytestmark = pytest.mark.browser
TIMEOUT_MS = 15_000
OTHER_AGENCY = "PASSPORT"  # another agency's application, beside the demo's NADRA ones
OTHER_REFERENCE = "DEMO-LHR-01-P001"
SCREENS = {  # screen -> its path and an element it shows
    "fleet": ("/fleet/", "#fleet"), "fleet-admin": ("/fleet/admin/", "main h1"),
    "monitoring": ("/monitoring/", "main h1"), "backoffice": ("/backoffice/", "#inbox"),
    "staff": ("/staff/", "main h1"), "actions": ("/actions/", "main h1"),
}


def other_agency_application(db: HQDatabase) -> None:
    """One waiting application of another agency on a demo node."""
    with db.transaction() as tx:
        projections.project(tx, "applications", "00000000-0000-4000-8000-0000000000p1",
                             "demo-lhr-01", {
                                 "reference": OTHER_REFERENCE, "service_code": "passport_new",
                                 "agency_code": OTHER_AGENCY, "status": "submitted",
                                 "created_at": "2024-01-01T00:00:00.000Z"}, "0")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, demo.Made]]:
    """The console over a demo store, served by waitress on a free port."""
    url = str(tmp_path / "hq" / "hq.db")
    db = HQDatabase(url)
    made = demo.fill(db)
    other_agency_application(db)
    db.close()
    assert made is not None
    app = create_app(url)
    server = create_server(app, host="127.0.0.1", port=0, threads=4, ident="edge-hq-test")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}", made
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
    server.close()
    app.extensions["hq_store"].db.close()


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_sign_in_and_fleet_in_the_browser(browser: Any, screenshots: Path,
                                          console: tuple[str, demo.Made], lang: str) -> None:
    base, made = console
    user, _, password, secret = next(m for m in made if m[1] == "monitoring_officer")
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/login?lang={lang}")
    assert page.get_attribute("html", "dir") == ("rtl" if lang == "ur" else "ltr")
    page.screenshot(path=str(screenshots / f"hq-login-{lang}.png"), full_page=True)
    page.focus("#username")
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Tab")
    page.keyboard.type(pyotp.TOTP(secret).now())
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")
    page.click("a[href='/fleet/']")
    page.wait_for_selector("#fleet")
    assert page.locator("#fleet tbody tr").count() == len(demo.NODES)
    page.screenshot(path=str(screenshots / f"hq-fleet-{lang}.png"), full_page=True)
    cookie = next(c for c in context.cookies() if c["name"] == "khidmat_hq")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert errors == []
    context.close()


def signed_in(browser: Any, base: str, made: demo.Made, role: str, lang: str = "en") -> Any:
    """A page signed in as the demo account of `role`, typed by keyboard (password + TOTP)."""
    user, _, password, secret = next(m for m in made if m[1] == role)
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/login?lang={lang}")
    page.focus("#username")
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Tab")
    page.keyboard.type(pyotp.TOTP(secret).now())
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")
    return page


def inbox_references(page: Any) -> list[str]:
    """The references listed in the back office inbox."""
    return [t.strip() for t in page.locator("#inbox tbody th[scope=row]").all_inner_texts()]


def test_agency_officer_decides_and_sees_only_own_agency(
        browser: Any, screenshots: Path, console: tuple[str, demo.Made]) -> None:
    base, made = console
    page = signed_in(browser, base, made, "agency_officer")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.click("a[href='/backoffice/']")
    page.wait_for_selector("#inbox")
    listed = inbox_references(page)
    assert len(listed) == 3 * len(demo.NODES) and OTHER_REFERENCE not in listed
    assert OTHER_REFERENCE not in page.content()
    chosen = listed[0]
    page.check(f"input[name=reference][value='{chosen}']")
    page.check("input[name=status][value=rejected]")
    page.fill("input[name=reason]", "photo unclear")
    page.click("fieldset button[type=submit]")
    page.wait_for_selector(".flash")
    assert chosen in page.inner_text(".flash")
    row = page.locator("#inbox tbody tr", has=page.locator(f"th:has-text('{chosen}')"))
    assert "pending" in row.inner_text()
    page.screenshot(path=str(screenshots / "hq-backoffice-decided-en.png"), full_page=True)
    refused = page.goto(f"{base}/backoffice/?agency={OTHER_AGENCY.lower()}")
    assert refused is not None and refused.status == 403
    assert OTHER_REFERENCE not in page.content()
    export = page.request.get(f"{base}/backoffice/export.csv?agency={OTHER_AGENCY}")
    assert export.status == 403 and OTHER_REFERENCE not in export.text()
    own = page.goto(f"{base}/backoffice/?agency=nadra")
    assert own is not None and own.status == 200 and inbox_references(page) == listed
    assert errors == []
    page.context.close()


def test_auditor_finds_nothing_that_changes_anything(
        browser: Any, console: tuple[str, demo.Made]) -> None:
    base, made = console
    page = signed_in(browser, base, made, "auditor")
    links = page.locator("nav a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert set(links) >= {path for path, _ in SCREENS.values()}
    for href in links:
        page.goto(f"{base}{href}")
        posts = page.locator("form").evaluate_all(
            "fs => fs.filter(f => f.method.toLowerCase() === 'post')"
            ".map(f => new URL(f.action).pathname)")
        assert posts == ["/logout"], (href, posts)
        submits = page.locator("button, input[type=submit]").evaluate_all(
            "bs => bs.filter(b => (b.type || 'submit') === 'submit' && b.form"
            " && b.form.method.toLowerCase() === 'post').map(b => b.form.action)")
        assert [s.endswith("/logout") for s in submits] == [True], (href, submits)
    page.goto(f"{base}/backoffice/")
    token = page.get_attribute("input[name=csrf_token]", "value")
    reference = inbox_references(page)[0]
    for path, form in (("/backoffice/decide", {"reference": reference, "status": "ready"}),
                       ("/fleet/admin/revoke", {"node_id": "demo-lhr-01"}),
                       ("/staff/create", {"center_id": "LHR-GULBERG", "username": "x"})):
        response = page.request.post(f"{base}{path}", form={"csrf_token": token, **form},
                                     max_redirects=0)
        assert response.status == 403, (path, response.status)
    page.goto(f"{base}/backoffice/")
    assert "pending" not in page.locator("#inbox").inner_text()
    page.context.close()


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_every_screen_in_both_languages(browser: Any, screenshots: Path,
                                        console: tuple[str, demo.Made], lang: str) -> None:
    base, made = console
    page = signed_in(browser, base, made, "admin", lang)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    for screen, (path, shown) in SCREENS.items():
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, screen
        page.wait_for_selector(shown)
        assert page.get_attribute("html", "lang") == lang
        assert page.get_attribute("html", "dir") == ("rtl" if lang == "ur" else "ltr")
        page.screenshot(path=str(screenshots / f"hq-{screen}-{lang}.png"), full_page=True)
    assert errors == []
    page.context.close()
