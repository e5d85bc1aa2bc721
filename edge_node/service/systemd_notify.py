"""Telling systemd how the service is doing: READY, WATCHDOG pings, STOPPING.

A tiny client of the sd_notify protocol (one datagram per message to the
AF_UNIX socket named by NOTIFY_SOCKET; `@` means the abstract namespace). The
protocol is fixed and this is 30 lines, so it needs no extra dependency.
Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

The watchdog thread pings at half of WATCHDOG_USEC, and only after a liveness
probe passed: the single database writer commits a no-op and the HTTP server
answers `/api/health`. A hung writer or server therefore stops the pings and
systemd restarts the node (`WatchdogSec=`, `Restart=on-failure`).
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from edge_node.store.writer import Writer

log = logging.getLogger(__name__)
PROBE_TIMEOUT_MAX_S = 10.0  # a probe slower than this (or the ping interval) fails


def _address(environ: Mapping[str, str]) -> str | None:
    """The notify socket address, or None when not run by systemd."""
    path = environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message (e.g. "READY=1"); False when there is no socket."""
    address = _address(os.environ if environ is None else environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:  # systemd gone or socket unreachable: the service goes on
        log.warning("sd_notify %s failed: %s", message.split("=")[0], exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog belongs to another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Watchdog:
    """A daemon thread sending WATCHDOG=1 every `interval_s` while the probe passes.

    The probe gets a time budget (a quarter of the watchdog period, at most
    PROBE_TIMEOUT_MAX_S) so a slow answer can never make a ping late by itself.
    """

    def __init__(self, interval_s: float, healthy: Callable[[float], bool],
                 send: Callable[[str], bool] = notify) -> None:
        """Prepare the thread; `start()` runs it."""
        self.interval_s = interval_s
        self._healthy = healthy
        self._send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)

    def start(self) -> None:
        """Start pinging."""
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging (at shutdown, before the server closes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s + PROBE_TIMEOUT_MAX_S)

    def _run(self) -> None:
        """Probe, ping if alive, wait; a failing probe skips the ping (systemd decides)."""
        budget = min(PROBE_TIMEOUT_MAX_S, self.interval_s / 4)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                alive = self._healthy(budget)
            except Exception as exc:  # a probe bug must look like "not alive", not crash
                log.error("watchdog probe failed: %s", type(exc).__name__)
                alive = False
            if alive and not self._stop.is_set():
                self._send("WATCHDOG=1")
            elif not alive:
                log.warning("liveness probe failed; withholding the watchdog ping")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


def serving_alive(writer: Writer, host: str, port: int, timeout_s: float) -> bool:
    """True when the writer commits a no-op and the HTTP server answers /api/health.

    Each of the two probes may take `timeout_s`.
    """
    try:
        writer.write(lambda db: None, timeout=timeout_s)
    except Exception:  # stopped writer (RuntimeError), timeout, database error
        return False
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    conn = http.client.HTTPConnection(target, port, timeout=timeout_s)
    try:
        conn.request("GET", "/api/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class ServiceNotifier:
    """What `edge-node serve` tells systemd over its life; inert outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read NOTIFY_SOCKET and WATCHDOG_USEC once."""
        self._environ = dict(os.environ if environ is None else environ)
        self.watchdog: Watchdog | None = None

    def _send(self, message: str) -> bool:
        """Notify with the environment read at start."""
        return notify(message, self._environ)

    def ready(self, status: str, healthy: Callable[[float], bool]) -> None:
        """READY=1 (the socket is bound) and start the watchdog if systemd asked for one."""
        self._send(f"READY=1\nSTATUS={status}")
        interval = watchdog_interval_s(self._environ)
        if interval is not None and _address(self._environ) is not None:
            self.watchdog = Watchdog(interval, healthy, self._send)
            self.watchdog.start()

    def stopping(self) -> None:
        """STOPPING=1 and no more pings."""
        self._send("STOPPING=1")
        if self.watchdog is not None:
            self.watchdog.stop()
