"""Server-sent events for the live screens (board, dashboard, counter, sync).

A stream polls its reader connection: `PRAGMA data_version` moves whenever the
writer commits, so a fragment is re-rendered only after a change (or once a
minute, for waiting times) and sent only when its HTML differs. Streams end
after STREAM_MAX_S; the browser reconnects (`retry:`), which re-checks the
session and frees the server thread for others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from flask import Flask, Response, current_app, stream_with_context

from edge_node import lifecycle
from edge_node.store.db import data_version
from local_ui.security import node

POLL_S = 0.5
HEARTBEAT_S = 15.0
STREAM_MAX_S = 60.0
RETRY_MS = 1000


STOP_EXTENSION = "khidmat_live_stop"
BUDGET_EXTENSION = "khidmat_live_budget"
THREADS_KEPT_FREE = 4  # server threads streams may never take: pages, the API, the watchdog
BUSY_RETRY_MS = 5000


def init_app(app: Flask, threads: int) -> None:
    """Give the app its stop signal for streams (`stop_all` sets it before the node closes)
    and a stream budget: a stream holds a server thread for up to STREAM_MAX_S, so at most
    `threads - THREADS_KEPT_FREE` run at once, or screens could starve page requests and
    the systemd watchdog's health probe (which would then restart a healthy node)."""
    app.extensions[STOP_EXTENSION] = threading.Event()
    app.extensions[BUDGET_EXTENSION] = threading.BoundedSemaphore(
        max(1, threads - THREADS_KEPT_FREE))
    lifecycle.on_stop(app, "live screens", lambda: stop_streams(app))


def _busy() -> Response:
    """Over budget: tell the browser to come back in a few seconds (no thread held)."""
    return Response(f"retry: {BUSY_RETRY_MS}\n\n", mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store"})


def _stopping() -> threading.Event:
    """Set when the server shuts down: open streams end at their next poll."""
    event: threading.Event = current_app.extensions[STOP_EXTENSION]
    return event


def stop_streams(app: Flask) -> None:
    """End every open stream of `app` (called before the node closes)."""
    app.extensions[STOP_EXTENSION].set()


def _version() -> tuple[int, int]:
    """Changes to the database as seen by this thread's reader, and the current minute."""
    return data_version(node().reader()), int(time.time() // 60)


def event(html: str, name: str = "update") -> str:
    """One SSE event carrying an HTML fragment (one `data:` line per line)."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


def stream(render: Callable[[], str]) -> Response:
    """An SSE response sending `render()` now and whenever it changes."""
    stop = _stopping()
    budget: threading.BoundedSemaphore = current_app.extensions[BUDGET_EXTENSION]
    if not budget.acquire(blocking=False):
        return _busy()

    def events() -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        started = beat = time.monotonic()
        seen, sent = None, None
        while time.monotonic() - started < STREAM_MAX_S and not stop.is_set():
            version = _version()
            if version != seen:
                seen = version
                html = render()
                if html != sent:
                    sent, beat = html, time.monotonic()
                    yield event(html)
            if time.monotonic() - beat > HEARTBEAT_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            stop.wait(POLL_S)

    response = Response(stream_with_context(events()), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(budget.release)  # the server closes it when the stream ends
    return response
