"""The staff UI in a real browser (Playwright driving Debian's chromium) against waitress.

One whole visit in each language: reception issues a ticket, the board shows the call
live, the operator calls, completes and opens an application, the citizen rates at the
kiosk, the supervisor's KPIs move. Screenshots of every screen in both languages go to
test-output/screenshots/. Plus CSRF, role denial, escaping and idle logout in the browser,
layout at 1366x768 and on a tablet, and no request leaving the node.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Dialog

from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX
from edge_node.node import Node
from tests.helpers import FakeClock

DESKTOP = {"width": 1366, "height": 768}
TABLET = {"width": 800, "height": 1280}
TIMEOUT_MS = 15_000
CNIC = "35202-1234567-1"
NAMES = {"en": "Ayesha Khan", "ur": "عائشہ خان"}


class Session:
    """One browser context (one device) logged in as one demo user."""

    def __init__(self, browser: Any, base: str, user: str, lang: str,
                 viewport: dict[str, int] = DESKTOP) -> None:
        """Open the context and log in through the login form, by keyboard only."""
        self.base, self.lang = base, lang
        self.context = browser.new_context(viewport=viewport, locale="en-US")
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{base}/login?lang={lang}")
        self.page.focus("#username")
        self.page.keyboard.type(user)
        self.page.keyboard.press("Tab")
        self.page.keyboard.type(user + DEMO_PASSWORD_SUFFIX)
        with self.page.expect_navigation():
            self.page.keyboard.press("Enter")
        assert "/login" not in self.page.url, f"{user} could not log in"

    def _console(self, message: ConsoleMessage) -> None:
        """Keep the page's console errors."""
        if message.type == "error":
            self.errors.append(message.text)

    def go(self, path: str) -> Any:
        """Open a page of the node."""
        return self.page.goto(self.base + path)

    def shot(self, folder: Path, name: str) -> None:
        """A full-page screenshot named by language and screen."""
        self.page.screenshot(path=str(folder / f"{self.lang}-{name}.png"), full_page=True)

    def close(self) -> None:
        """Check nothing left the node and no CSP or script error happened, then close."""
        outside = [u for u in self.requests if not u.startswith(self.base)
                   and not u.startswith(("data:", "about:", "blob:"))]
        self.context.close()
        assert not outside, f"requests left the node: {outside}"
        assert not self.errors, f"browser errors: {self.errors}"


@pytest.fixture
def sessions(browser: Any, live_server: str) -> Iterator[Any]:
    """`open_session(user, lang)`; every session is checked and closed at the end."""
    opened: list[Session] = []

    def open_session(user: str, lang: str, viewport: dict[str, int] = DESKTOP) -> Session:
        session = Session(browser, live_server, user, lang, viewport)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


def kpi(session: Session, name: str) -> str:
    """A figure of the supervisor's dashboard."""
    return str(session.page.locator(f'[data-kpi="{name}"]').inner_text()).strip()


def assert_direction(session: Session) -> None:
    """Urdu pages are right-to-left, English left-to-right."""
    html = session.page.locator("html")
    assert html.get_attribute("lang") == session.lang
    assert html.get_attribute("dir") == ("rtl" if session.lang == "ur" else "ltr")


def fits(session: Session) -> bool:
    """No horizontal scrolling at this viewport."""
    return bool(session.page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"))


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_whole_visit(sessions: Any, node: Node, screenshots: Path, lang: str) -> None:
    """Reception -> board -> operator (call, complete, application) -> kiosk -> dashboard."""
    supervisor = sessions("supervisor", lang)
    supervisor.go("/supervisor")
    assert_direction(supervisor)
    assert (kpi(supervisor, "issued"), kpi(supervisor, "served"),
            kpi(supervisor, "feedback_count")) == ("0", "0", "0")
    supervisor.shot(screenshots, "supervisor-before")

    board = sessions("display", lang)
    board.go(f"/board?lang={lang}")
    assert_direction(board)
    board.shot(screenshots, "board-empty")

    # Reception: find (not registered), register, choose a service, check documents, issue.
    reception = sessions("reception", lang)
    reception.go("/reception")
    assert_direction(reception)
    assert fits(reception)
    reception.shot(screenshots, "reception")
    page = reception.page
    page.fill("#cnic", CNIC)
    page.locator("#cnic").press("Enter")
    page.wait_for_selector("#register-form")
    page.fill("#r-name", NAMES[lang])
    page.fill("#r-phone", "0300-1234567")
    page.click("#register-form button[type=submit]")
    card = page.locator("#citizen-card")
    card.wait_for()
    assert NAMES[lang] in card.inner_text()
    assert card.locator('bdi[dir="ltr"]', has_text=CNIC).count() == 1
    page.check('input[name="services"][value="nadra_snic_renewal"]')
    page.click("#to-documents")
    page.wait_for_selector("#issue-form")
    for box in page.locator('#issue-form input[name="documents"]').all():
        box.check()
    reception.shot(screenshots, "reception-documents")
    page.click("#issue-ticket")
    page.wait_for_url(re.compile(r"/tickets/"))
    number = page.locator("#ticket-number bdi").inner_text().strip()
    assert number == "A-001"
    assert page.locator(".ticket-qr svg path").count() >= 1
    assert page.locator('.ticket [lang="ur"]').count() >= 2  # bilingual whatever the UI
    reception.shot(screenshots, "ticket")

    # Operator: pick the counter, open it, call the ticket.
    operator = sessions("operator", lang)
    operator.go("/operator")
    op = operator.page
    counter_id = op.locator("#counter option", has_text=re.compile(r"^Counter 1 \(")
                            ).get_attribute("value")
    op.select_option("#counter", value=counter_id)
    op.click("#counter-picker button")
    op.click("#open-counter")
    op.click("#call-next")
    assert op.locator("#current-number").inner_text().strip() == number
    assert_direction(operator)
    operator.shot(screenshots, "operator-serving")

    # The board shows it live (server-sent events, no reload) and chimes.
    first_row = board.page.locator(".calls tr.latest td.num")
    first_row.wait_for()
    board.page.wait_for_function(
        "document.querySelector('.calls tr.latest td.num').innerText.trim() === 'A-001'")
    assert int(board.page.get_attribute("body", "data-live-updates") or 0) >= 1
    board.page.wait_for_function("parseInt(document.body.dataset.chimes || '0') >= 1")
    board.shot(screenshots, "board")

    # Complete, then open the application for the service just done.
    op.click("#complete")
    op.locator("#recent .open-application").first.click()
    op.wait_for_selector("#application-form")
    op.fill("#fee_reference", "PSID-1234567")
    operator.shot(screenshots, "application-new")
    op.click("#create-application")
    op.wait_for_url(re.compile(r"/applications\?reference="))
    row = op.locator("#applications tbody tr").first
    assert "PSID-1234567" in row.inner_text()
    reference = row.get_attribute("data-reference")
    assert reference and reference.startswith(node.center_id)
    operator.shot(screenshots, "applications")

    # The citizen rates at the kiosk tablet of that counter; the kiosk resets itself.
    kiosk = sessions("kiosk", lang, TABLET)
    kiosk.go(f"/kiosk?counter={counter_id}&lang={lang}")
    assert_direction(kiosk)
    assert kiosk.page.locator("#kiosk-ticket").inner_text().strip() == number
    assert fits(kiosk)
    kiosk.shot(screenshots, "kiosk")
    kiosk.page.fill("#comment", "<b>شکریہ</b> good" if lang == "ur" else "<b>Quick</b> thanks")
    kiosk.page.click("#rate-5")
    kiosk.page.wait_for_selector("#thanks")
    kiosk.shot(screenshots, "kiosk-thanks")
    kiosk.page.wait_for_url(re.compile(r"/kiosk$"), timeout=TIMEOUT_MS)
    assert kiosk.page.locator("#kiosk-ticket").count() == 0  # rated: no longer offered

    # The dashboard changed live.
    sp = supervisor.page
    sp.wait_for_function("document.querySelector('[data-kpi=feedback_count]').innerText"
                         ".trim() === '1'")
    assert (kpi(supervisor, "issued"), kpi(supervisor, "served")) == ("1", "1")
    assert kpi(supervisor, "satisfaction") == "100.0%"
    assert sp.locator("#chart-ratings-t").count() == 1
    supervisor.shot(screenshots, "supervisor-after")


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_other_screens(sessions: Any, screenshots: Path, lang: str) -> None:
    """Login, volunteers, sync, technician and the error pages render in both languages."""
    manager = sessions("manager", lang)
    for path, name in [("/volunteers", "volunteers"), ("/sync", "sync"),
                       ("/technician", "technician"), ("/applications", "applications-list")]:
        manager.go(path)
        assert_direction(manager)
        assert fits(manager), name
        manager.shot(screenshots, name)
    page = manager.page
    manager.go("/volunteers")
    page.fill("#v-name", "Bilal" if lang == "en" else "بلال")
    page.fill("#v-skills", "urdu, sign language")
    page.click("form[action='/volunteers'] button")
    page.locator("input[name=planned_start]").first.fill("00:00")
    page.locator("input[name=planned_end]").first.fill("23:59")
    page.locator("form[action$='/shifts'] button").first.click()
    page.locator("form[action$='/check-in'] button").first.click()
    page.locator("form[action$='/assist'] button").first.click()
    assert "sign_language" in page.inner_text("body")
    manager.shot(screenshots, "volunteers-shift")
    fresh = manager.context.browser.new_context(viewport=DESKTOP)
    anonymous = fresh.new_page()
    anonymous.goto(manager.base + f"/login?lang={lang}")
    assert anonymous.locator("html").get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
    anonymous.screenshot(path=str(screenshots / f"{lang}-login.png"), full_page=True)
    fresh.close()


def test_role_denial_csrf_and_escaping_in_the_browser(sessions: Any, screenshots: Path) -> None:
    """The operator may not open the dashboard; a tokenless POST is refused; markup is text."""
    operator = sessions("operator", "ur")
    response = operator.go("/supervisor")
    assert response.status == 403
    assert "اجازت نہیں" in operator.page.inner_text("h1")
    operator.shot(screenshots, "denied")
    operator.errors.clear()  # the console reports the 403 itself

    reception = sessions("reception", "en")
    forged = reception.page.request.post(reception.base + "/reception/visits",
                                         form={"services": "nadra_snic_renewal"})
    assert forged.status == 400
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    reception.page.on("dialog", on_dialog)
    reception.go(f"/reception?cnic={CNIC}")
    reception.page.fill("#r-name", "<script>alert(1)</script><img src=x onerror=alert(2)>")
    reception.page.click("#register-form button[type=submit]")
    name = reception.page.locator("#citizen-card .name")
    assert name.inner_text() == "<script>alert(1)</script><img src=x onerror=alert(2)>"
    assert not dialogs
    reception.shot(screenshots, "escaped-name")


def test_idle_logout_warns_first(sessions: Any, browser: Any, live_server: str,
                                 clock: FakeClock, node: Node, screenshots: Path) -> None:
    """Near the idle limit a warning appears; staying resets it; silence logs out."""
    idle_s = node.settings["session_idle_minutes"] * 60
    operator = sessions("operator", "en")
    page = operator.page
    page.clock.install()
    operator.go("/operator")
    page.clock.fast_forward((idle_s - 30) * 1000)
    warning = page.locator("#idle-warning")
    warning.wait_for(state="visible")
    operator.shot(screenshots, "idle-warning")
    page.click("#idle-stay")
    assert warning.is_hidden()
    page.clock.fast_forward((idle_s - 30) * 1000)
    warning.wait_for(state="visible")
    clock.advance(seconds=idle_s + 60)  # the server agrees the session idled out
    page.clock.fast_forward(60_000)
    page.wait_for_url(re.compile(r"/login"))
    assert "inactivity" in page.inner_text("main")
    operator.go("/operator")
    assert "/login" in page.url


def test_layout_on_desktop_and_tablet(sessions: Any) -> None:
    """Reception, counter and dashboard fit 1366x768 and a portrait tablet without sideways
    scrolling; focus is visible on keyboard use."""
    for viewport in (DESKTOP, TABLET):
        manager = sessions("manager", "ur", viewport)
        for path in ("/reception", "/operator", "/supervisor", "/applications"):
            manager.go(path)
            assert fits(manager), (viewport, path)
        manager.page.keyboard.press("Tab")
        outline = manager.page.evaluate(
            "getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")
