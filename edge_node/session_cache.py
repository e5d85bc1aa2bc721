"""A few seconds of memory for session lookups.

Every API request carries a bearer token; looking it up means a join on an
encrypted connection plus a hash. Remembering the answer for SESSION_CACHE_S
(in the node's own clock, so idle timeouts stay exact in tests) removes most
of that cost. Logout and staff changes from HQ clear it.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

SESSION_CACHE_S = 5.0
MAX_ENTRIES = 4096


class SessionCache:
    """token → (staff, when it was checked), thread-safe."""

    def __init__(self) -> None:
        """Start empty."""
        self._entries: dict[str, tuple[dict[str, Any], datetime]] = {}
        self._lock = threading.Lock()

    def get(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The cached staff of a token checked less than SESSION_CACHE_S ago."""
        with self._lock:
            entry = self._entries.get(token)
        if entry is None:
            return None
        staff, checked = entry
        age = (now - checked).total_seconds()
        return staff if 0 <= age < SESSION_CACHE_S else None

    def put(self, token: str, staff: dict[str, Any], now: datetime) -> None:
        """Remember a successful lookup."""
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[token] = (staff, now)

    def drop(self, token: str) -> None:
        """Forget one token (logout)."""
        with self._lock:
            self._entries.pop(token, None)

    def clear(self) -> None:
        """Forget everything (staff accounts changed)."""
        with self._lock:
            self._entries.clear()
