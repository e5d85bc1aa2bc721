"""The HQ console in a real browser (Playwright driving Debian's chromium) against waitress:
a demo store, sign-in with password and TOTP by keyboard, the fleet screen in English and
Urdu (right to left), screenshots in test-output/screenshots/."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from waitress.server import create_server

from hq.console import demo
from hq.console.app import create_app
from hq.store import HQDatabase

TIMEOUT_MS = 15_000


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, demo.Made]]:
    """The console over a demo store, served by waitress on a free port."""
    url = str(tmp_path / "hq" / "hq.db")
    db = HQDatabase(url)
    made = demo.fill(db)
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
