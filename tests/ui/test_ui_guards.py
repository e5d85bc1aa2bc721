"""Role guards, CSRF, idle logout, lockout, escaping, headers and languages (Flask test client)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge_node import login_throttle
from edge_node.bootstrap import DEMO_PASSWORD_SUFFIX, DEMO_STAFF
from edge_node.domain import roles, staff, visits
from edge_node.node import Node
from local_ui.views.auth import safe_next
from tests.helpers import NADRA, FakeClock
from tests.ui.conftest import csrf_of, token_of, ui_login

Client = Callable[[str | None], FlaskClient]
ROLE_OF = {user: role for user, _, role in DEMO_STAFF}
# Every GET screen and the roles that may open it.
SCREENS = {
    "/reception": roles.RECEPTION,
    "/operator": roles.OPERATORS,
    "/board": roles.BOARD,
    "/kiosk": roles.FEEDBACK,
    "/supervisor": roles.SUPERVISORS | roles.AUDITORS,
    "/applications": roles.RECEPTION | roles.OPERATORS | roles.AUDITORS,
    "/volunteers": roles.SUPERVISORS | {"volunteer"},
    "/sync": roles.SUPERVISORS | roles.TECHNICIANS,
    "/technician": roles.TECHNICIANS,
    "/tickets/{ticket}": roles.RECEPTION | roles.OPERATORS,
    "/applications/new?ticket={ticket}": roles.OPERATORS,
    "/board/live": roles.BOARD,
    "/supervisor/live": roles.SUPERVISORS | roles.AUDITORS,
    "/operator/live": roles.OPERATORS,
    "/sync/live": roles.SUPERVISORS | roles.TECHNICIANS,
}
ESCAPE_NAMES = ["<script>alert(1)</script>", "<script>alert('سلام')</script> علی"]


def make_ticket(node: Node) -> dict[str, Any]:
    """A ticket issued straight through the domain."""
    actor = {"id": None, "role": "receptionist"}
    now, day = node.timestamp(), node.today()
    made = node.write(lambda db: visits.create_visit(
        db, services=[NADRA], priority="normal", citizen_id=None, missing_documents=[],
        actor=actor, now=now, day=day))
    return dict(made["ticket"])


def get(client: FlaskClient, path: str) -> Any:
    """GET without following redirects; streams are closed after the first chunk."""
    resp = client.get(path, buffered=False)
    resp.close()
    return resp


@pytest.mark.parametrize("user", [u for u, _, _ in DEMO_STAFF])
def test_every_screen_checks_the_role(ui_client: Client, node: Node, user: str) -> None:
    """Allowed roles get the screen; the others get 403, never the content."""
    client = ui_client(user)
    ticket = make_ticket(node)
    for template, allowed in SCREENS.items():
        path = template.format(ticket=ticket["id"])
        resp = get(client, path)
        expected = 200 if ROLE_OF[user] in allowed else 403
        assert resp.status_code == expected, (user, path, resp.status_code)


@pytest.mark.parametrize("path", [p for p in SCREENS if "{" not in p])
def test_anonymous_goes_to_login(ui_client: Client, path: str) -> None:
    """Without a session every screen redirects to the login page, which comes back here."""
    resp = get(ui_client(None), path)
    assert resp.status_code == 302
    assert resp.location.startswith("/login?next=")


def test_login_lands_on_the_role_screen_and_next_is_local_only(ui_client: Client) -> None:
    """A role lands on its own screen; `next` may not point to another site."""
    client = ui_client(None)
    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login?next=//evil.example/x", data={
        "username": "operator", "password": "operator-demo-pass", "csrf_token": csrf_of(page)})
    assert resp.status_code == 302 and resp.location == "/operator"
    assert get(client, "/").location == "/operator"


# `next` values a browser would follow to another site (after its WHATWG URL parsing:
# tab/CR/LF dropped, C0 controls and spaces trimmed, backslash read as slash).
OFFSITE_NEXT = [
    "//evil.example", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
    "/\t/evil.example", "\t//evil.example", "/\n/evil.example", "/\r\n/evil.example",
    "/\\/evil.example", " //evil.example", "\x00//evil.example", "\x1f/\\evil.example",
    "/\t\\evil.example", "https://evil.example", "http:evil.example", "javascript:alert(1)",
    "JavaScript:alert(1)", "java\tscript:alert(1)", "data:text/html,x", "evil.example",
    "//evil.example@x", "https:/\\evil.example", "\t", "", "/x\x7f", "/x\x00y",
]
ONSITE_NEXT = {
    "/operator": "/operator",
    "/tickets/abc?x=1#top": "/tickets/abc?x=1#top",
    "/o\tper\nator": "/operator",
    "/a\\b": "/a/b",
    "/%2F%2Fevil.example": "/%2F%2Fevil.example",
    "/applications?q=é": "/applications?q=%C3%A9",
    "/a b": "/a%20b",
}


@pytest.mark.parametrize("target", OFFSITE_NEXT)
def test_next_refuses_every_offsite_form(target: str) -> None:
    """No form of another site (or a script URL) survives the browser's normalisation."""
    assert safe_next(target) is None


@pytest.mark.parametrize(("target", "expected"), ONSITE_NEXT.items())
def test_next_keeps_local_paths_as_the_browser_reads_them(target: str, expected: str) -> None:
    """A local path comes back normalised and URL-encoded, ready for a Location header."""
    assert safe_next(target) == expected


@pytest.mark.parametrize("query", ["%2F%09%2Fevil.example", "%2F%5C%2Fevil.example",
                                   "%2F%0D%0A%2Fevil.example", "%0D%0ASet-Cookie:x=1",
                                   "%2Fx%0D%0ASet-Cookie:x=1"])
def test_login_never_redirects_offsite_nor_fails(ui_client: Client, query: str) -> None:
    """The real login form with a hostile `next`: a local 302, never another site or a 500."""
    client = ui_client(None)
    page = client.get("/login").get_data(as_text=True)
    resp = client.post(f"/login?next={query}", data={
        "username": "operator", "password": "operator-demo-pass", "csrf_token": csrf_of(page)})
    assert resp.status_code == 302
    assert resp.location.startswith("/") and not resp.location.startswith("//")
    assert "\r" not in resp.location and "\n" not in resp.location
    assert "Set-Cookie: x" not in str(resp.headers)


def test_post_without_or_with_a_wrong_csrf_token_is_refused(ui_client: Client,
                                                            node: Node) -> None:
    """A forged form changes nothing: 400, and no visit is recorded."""
    client = ui_client("reception")
    before = node.reader().execute("SELECT count(*) FROM visits").fetchone()[0]
    form = {"services": NADRA, "priority": "normal"}
    for token in (None, "forged", token_of(client)[:-1] + "x"):
        data = dict(form) if token is None else {**form, "csrf_token": token}
        resp = client.post("/reception/visits", data=data)
        assert resp.status_code == 400
        assert "security token" in resp.get_data(as_text=True)
    assert node.reader().execute("SELECT count(*) FROM visits").fetchone()[0] == before
    ok = client.post("/reception/visits", data={**form, "csrf_token": token_of(client),
                                                "documents": ["cnic_original", "cnic_copy",
                                                              "fee_challan"]})
    assert ok.status_code == 302 and ok.location.startswith("/tickets/")


def test_login_form_needs_csrf_too(ui_client: Client) -> None:
    """Even the login form: a cross-site login is refused."""
    resp = ui_client(None).post("/login", data={"username": "operator",
                                                "password": "operator-demo-pass"})
    assert resp.status_code == 400


def test_idle_session_is_logged_out(ui_client: Client, clock: FakeClock,
                                    node: Node) -> None:
    """After session_idle_minutes without a request the session ends and says why."""
    client = ui_client("operator")
    assert get(client, "/operator").status_code == 200
    clock.advance(minutes=node.settings["session_idle_minutes"] + 1)
    resp = get(client, "/operator")
    assert resp.status_code == 302 and resp.location.startswith("/login")
    page = client.get("/login").get_data(as_text=True)
    assert "logged out after a period of inactivity" in page
    assert get(client, "/operator").status_code == 302  # the old token stays dead


def test_activity_ping_keeps_the_session(ui_client: Client, clock: FakeClock,
                                         node: Node) -> None:
    """The page's keep-alive (on keyboard/pointer activity) resets the idle timer."""
    client = ui_client("operator")
    idle = node.settings["session_idle_minutes"]
    for _ in range(3):
        clock.advance(minutes=idle - 1)
        resp = client.post("/session/ping", headers={"X-CSRF-Token": token_of(client)})
        assert resp.status_code == 200
    assert get(client, "/operator").status_code == 200
    assert client.post("/session/ping").status_code == 400  # the ping needs the token too


def test_logout_ends_the_session(ui_client: Client) -> None:
    """Logout deletes the server-side session, not only the cookie."""
    client = ui_client("supervisor")
    with client.session_transaction() as sess:
        saved = dict(sess)
    assert client.post("/logout", data={"csrf_token": token_of(client)}).status_code == 302
    with client.session_transaction() as sess:
        sess.update(saved)  # replay the old cookie
    assert get(client, "/supervisor").status_code == 302


def test_ui_logout_ends_the_bearer_token_at_once(ui_client: Client) -> None:
    """The UI session's token, used on the API (and so cached), is refused right after logout.

    Both requests come well within the cache's 5 s, so a token still cached would pass.
    """
    client = ui_client("supervisor")
    with client.session_transaction() as sess:
        bearer = {"Authorization": f"Bearer {sess['token']}"}
    assert client.get("/api/auth/me", headers=bearer).status_code == 200
    assert client.post("/logout", data={"csrf_token": token_of(client)}).status_code == 302
    assert client.get("/api/auth/me", headers=bearer).status_code == 401


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/login", {"GET", "HEAD", "OPTIONS", "POST"}),
    ("GET", "/logout", {"POST", "OPTIONS"}),
    ("DELETE", "/reception", {"GET", "HEAD", "OPTIONS"}),
])
def test_screen_405_says_which_methods_are_allowed(ui_client: Client, method: str, path: str,
                                                   allowed: set[str]) -> None:
    """The HTML 405 page carries the Allow header too."""
    resp = ui_client(None).open(path, method=method)
    assert resp.status_code == 405 and resp.mimetype == "text/html"
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed


def test_login_page_throttles_one_client_not_the_others(ui_client: Client) -> None:
    """A device that failed too many logins waits (429, Retry-After); other devices do not."""
    stranger = ui_client(None)
    stranger.environ_base["REMOTE_ADDR"] = "10.0.0.66"
    users = [user for user, _, _ in DEMO_STAFF]
    for i in range(login_throttle.FREE_FAILURES):
        assert ui_login(stranger, users[i % len(users)], "wrong-password-1").status_code == 401
    resp = ui_login(stranger, "operator")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert "Too many failed logins from this device" in resp.get_data(as_text=True)
    assert ui_login(ui_client(None), "operator").status_code == 302


def test_repeated_failures_lock_the_account(ui_client: Client, node: Node) -> None:
    """The login page shows the lockout, even for the right password afterwards."""
    client = ui_client(None)
    for _ in range(node.settings["login_max_failures"]):
        assert ui_login(client, "reception", "wrong-password-1").status_code == 401
    resp = ui_login(client, "reception")
    assert resp.status_code == 423
    assert "locked" in resp.get_data(as_text=True)


@pytest.mark.parametrize("name", ESCAPE_NAMES)
def test_citizen_names_are_shown_as_text(ui_client: Client, name: str) -> None:
    """A name that looks like markup is escaped wherever it appears."""
    client = ui_client("reception")
    resp = client.post("/reception/citizens", data={
        "cnic": "35202-1234567-1", "name": name, "csrf_token": token_of(client)})
    assert resp.status_code == 302
    page = client.get(resp.location).get_data(as_text=True)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page


def test_security_headers(ui_client: Client) -> None:
    """CSP without inline script or style, no framing, no referrer, no caching of screens."""
    resp = get(ui_client("reception"), "/reception")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    cookie = ui_login(ui_client(None), "operator").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_templates_have_no_inline_script_or_style(ui_client: Client, node: Node) -> None:
    """What the CSP forbids never appears: no <script> bodies, no style attributes, no CDN."""
    client = ui_client("manager")
    ticket = make_ticket(node)
    for path in ["/reception", "/operator", "/supervisor", "/applications", "/volunteers",
                 "/sync", "/technician", "/board", "/kiosk", f"/tickets/{ticket['id']}"]:
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\sstyle=", html), path
        assert not re.search(r"\son[a-z]+=", html), path
        assert not re.search(r"(src|href)=\"(https?:)?//", html), path


def test_language_per_user(ui_client: Client, node: Node) -> None:
    """A staff member whose language is Urdu gets right-to-left Urdu pages after login."""
    now = node.timestamp()
    node.write(lambda db: staff.create_staff(db, "urdu-op", "اردو آپریٹر", "operator",
                                             "urdu-op-password", now, language="ur"))
    client = ui_client(None)
    assert ui_login(client, "urdu-op", "urdu-op-password").status_code == 302
    html = client.get("/operator").get_data(as_text=True)
    assert '<html lang="ur" dir="rtl">' in html and "کاؤنٹر کنسول" in html
    html = client.get("/operator?lang=en").get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in html  # switched for this session


def test_language_per_device(ui_client: Client) -> None:
    """A kiosk or board set to Urdu once stays Urdu, across logins, by a device cookie."""
    client = ui_client("display")
    resp = client.get("/board?lang=ur")
    assert "khidmat_lang=ur" in resp.headers["Set-Cookie"]
    client.post("/logout", data={"csrf_token": token_of(client)})
    with client.session_transaction() as sess:
        sess.clear()
    assert ui_login(client, "display").status_code == 302
    assert '<html lang="ur" dir="rtl">' in client.get("/board").get_data(as_text=True)
    staff_client = ui_client("operator")  # a staff PC ignores another device's cookie
    staff_client.set_cookie("khidmat_lang", "ur")
    assert '<html lang="en"' in staff_client.get("/operator").get_data(as_text=True)


def test_numbers_are_isolated_left_to_right(ui_client: Client) -> None:
    """CNIC and phone sit in <bdi dir="ltr"> so they read correctly inside Urdu."""
    client = ui_client("reception")
    resp = client.post("/reception/citizens", data={
        "cnic": "35202-1234567-1", "name": "عائشہ", "phone": "0300-1234567",
        "csrf_token": token_of(client)})
    html = client.get(resp.location + "&lang=ur").get_data(as_text=True)
    assert '<bdi dir="ltr">35202-1234567-1</bdi>' in html
    assert '<bdi dir="ltr">+923001234567</bdi>' in html


@pytest.mark.parametrize(("cnic", "fragment"), [
    ("12345", "13 digits"), ("85202-1234567-1", "1 to 7"), ("35202-1234567-0", "never ends")])
def test_cnic_validation_messages(ui_client: Client, cnic: str, fragment: str) -> None:
    """A mistyped CNIC gets a plain message, in the page's language."""
    client = ui_client("reception")
    assert fragment in client.get(f"/reception?cnic={cnic}").get_data(as_text=True)
    assert "شناختی" in client.get(f"/reception?cnic={cnic}&lang=ur").get_data(as_text=True)


def test_live_stream_sends_a_fragment(ui_client: Client, node: Node) -> None:
    """The board's SSE stream starts with a retry hint and the called numbers fragment."""
    resp = ui_client("display").get("/board/live", buffered=False)
    assert resp.mimetype == "text/event-stream"
    chunks = resp.response
    assert next(chunks).startswith(b"retry:")  # type: ignore[call-overload]
    first = next(chunks).decode()  # type: ignore[call-overload]
    resp.close()
    assert first.startswith("event: update\ndata: ")
    assert "board-body" in first


def test_api_still_answers_json(ui_client: Client) -> None:
    """The UI app keeps the JSON API and its error shape (no CSRF on bearer routes)."""
    client = ui_client(None)
    assert client.get("/api/health").get_json()["ok"] is True
    body = client.get("/api/nowhere").get_json()
    assert body["ok"] is False and body["status"] == 404
    assert client.post("/api/auth/login", json={"username": "x", "password": "y"}
                       ).status_code == 401


def test_unknown_page_is_an_html_404(ui_client: Client) -> None:
    """Outside /api errors are pages, not JSON."""
    resp = ui_client("operator").get("/nowhere")
    assert resp.status_code == 404 and resp.mimetype == "text/html"


def test_assets_are_served_locally(ui_client: Client) -> None:
    """The stylesheet and script come from the node itself, with the right types."""
    client = ui_client(None)
    css, js = client.get("/assets/app.css"), client.get("/assets/app.js")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert js.status_code == 200 and js.mimetype in ("text/javascript", "application/javascript")
    html = client.get("/login").get_data(as_text=True)
    assert 'href="/assets/app.css"' in html and 'src="/assets/app.js"' in html


def test_live_streams_do_not_keep_a_staff_session_alive(ui_client: Client, clock: FakeClock,
                                                        node: Node) -> None:
    """An open dashboard is not activity: the supervisor still idles out; the board does not."""
    idle = node.settings["session_idle_minutes"]
    supervisor, board = ui_client("supervisor"), ui_client("display")
    stream = {"Accept": "text/event-stream"}
    for _ in range(3):
        clock.advance(minutes=idle // 2 + 1)
        for client, path in ((supervisor, "/supervisor/live"), (board, "/board/live")):
            client.get(path, headers=stream, buffered=False).close()
    assert get(supervisor, "/supervisor").status_code == 302
    assert get(board, "/board").status_code == 200



def test_live_streams_leave_threads_for_pages_and_the_watchdog(node: Node) -> None:
    """A stream holds a server thread for a minute: with 6 threads only 2 screens stream
    at once; the third is told to come back shortly, and pages and /api/health (the
    watchdog's probe) still answer at once."""
    import threading

    import requests
    from waitress.server import create_server

    from local_ui import live
    from local_ui.app import create_app

    node.settings["threads"] = 6
    app = create_app(node)
    server = create_server(app, host="127.0.0.1", port=0, threads=6, ident="t")
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    board = requests.Session()
    page = board.get(f"{base}/login", timeout=5)
    board.post(f"{base}/login", timeout=5, data={
        "username": "display", "password": "display" + DEMO_PASSWORD_SUFFIX,
        "csrf_token": csrf_of(page.text)})
    streams = [board.get(f"{base}/board/live", stream=True, timeout=5) for _ in range(2)]
    try:
        for response in streams:
            assert next(response.iter_content(64)).startswith(b"retry: 1000")
        busy = board.get(f"{base}/board/live", timeout=5)
        assert busy.text == f"retry: {live.BUSY_RETRY_MS}\n\n"
        assert requests.get(f"{base}/api/health", timeout=2).status_code == 200
    finally:
        live.stop_streams(app)
        for response in streams:
            response.close()
        server.close()
