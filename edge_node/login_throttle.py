"""Per-client throttle of failed logins, across all accounts.

Account lockout (`domain.staff.login`) stops guessing one account's password;
it does nothing against one client trying a password on each of many
accounts. This throttle counts one client address's failed logins over every
account: the first FREE_FAILURES within WINDOW_S pass at once; after that the
client must wait BACKOFF_BASE_S, doubling with each further failure up to
BACKOFF_MAX_S, counted from its last failure.

It is keyed by client address only, so a stranger's failures slow that
stranger down and nobody else: staff logging in from another client are not
affected. A throttled attempt is refused before any password is checked, so
it does not count toward any account's lockout either. Times come from the
node's clock (tests move a fake one). Memory only: a restart forgets it.
"""

from __future__ import annotations

import threading
from datetime import datetime

# Twice the default account lockout (login_max_failures = 5): one person mistyping their own
# password meets the account lockout, with its own message, before this throttle.
FREE_FAILURES = 10
WINDOW_S = 900.0
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_CLIENTS = 4096
# Enough failures to reach BACKOFF_MAX_S; older ones change nothing.
_KEEP = FREE_FAILURES + 10


class LoginThrottle:
    """client address → times of its recent failed logins, thread-safe."""

    def __init__(self) -> None:
        """Start with no failures."""
        self._failures: dict[str, list[datetime]] = {}
        self._lock = threading.Lock()

    def wait_s(self, client: str, now: datetime) -> float:
        """Seconds `client` must still wait before its next login attempt (0: go ahead)."""
        with self._lock:
            recent = self._recent(client, now)
        extra = len(recent) - FREE_FAILURES
        if extra < 0:
            return 0.0
        delay = min(BACKOFF_BASE_S * 2.0 ** extra, BACKOFF_MAX_S)
        return max(0.0, delay - (now - recent[-1]).total_seconds())

    def failed(self, client: str, now: datetime) -> None:
        """Count one failed login of `client`."""
        with self._lock:
            if client not in self._failures and len(self._failures) >= MAX_CLIENTS:
                self._forget_idle(now)
            recent = self._recent(client, now)
            recent.append(now)
            self._failures[client] = recent[-_KEEP:]

    def _recent(self, client: str, now: datetime) -> list[datetime]:
        """The client's failures within WINDOW_S (caller holds the lock)."""
        return [t for t in self._failures.get(client, [])
                if 0 <= (now - t).total_seconds() < WINDOW_S]

    def _forget_idle(self, now: datetime) -> None:
        """Make room: drop clients with no failure in the window, or all if none are idle."""
        idle = [c for c in self._failures if not self._recent(c, now)]
        for client in idle or list(self._failures):
            del self._failures[client]
