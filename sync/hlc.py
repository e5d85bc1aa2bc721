"""Hybrid logical clock (Kulkarni et al.): wall time that never runs backwards.

A timestamp is `(wall_ms, counter, node_id)`; its string form sorts
lexicographically in the same order as the tuple, so it can be compared in
SQL and used as a last-writer-wins key.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WALL_DIGITS = 15
COUNTER_DIGITS = 5
MAX_COUNTER = 10**COUNTER_DIGITS - 1
MAX_DRIFT_MS = 24 * 3600 * 1000  # refuse remote clocks further ahead than a day
_PATTERN = re.compile(r"^(\d{15})-(\d{5})-([A-Za-z0-9_.:-]{1,64})$")


class HLCError(ValueError):
    """A timestamp is malformed or too far in the future."""


@dataclass(frozen=True, order=True)
class Timestamp:
    """One HLC reading."""

    wall_ms: int
    counter: int
    node_id: str

    def __str__(self) -> str:
        """Fixed-width form that sorts like the tuple."""
        return f"{self.wall_ms:0{WALL_DIGITS}d}-{self.counter:0{COUNTER_DIGITS}d}-{self.node_id}"

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse the string form, raising HLCError when malformed."""
        match = _PATTERN.fullmatch(text or "")
        if not match:
            raise HLCError(f"malformed HLC timestamp: {text!r}")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))


def _wall_ms() -> int:
    """Current wall time in milliseconds."""
    return time.time_ns() // 1_000_000


class Clock:
    """A thread-safe HLC for one node."""

    def __init__(self, node_id: str, wall: Callable[[], int] = _wall_ms) -> None:
        """Start at zero; call `observe` with the newest stored timestamp."""
        self.node_id = node_id
        self._wall = wall
        self._last_ms = 0
        self._counter = 0
        self._lock = threading.Lock()

    def now(self) -> Timestamp:
        """Return a timestamp greater than every one issued or observed before."""
        with self._lock:
            wall = self._wall()
            if wall > self._last_ms:
                self._last_ms, self._counter = wall, 0
            else:
                self._tick_counter()
            return Timestamp(self._last_ms, self._counter, self.node_id)

    def observe(self, remote: Timestamp | str) -> None:
        """Merge a timestamp seen elsewhere (or stored before a restart)."""
        stamp = Timestamp.parse(remote) if isinstance(remote, str) else remote
        with self._lock:
            wall = self._wall()
            if stamp.wall_ms > wall + MAX_DRIFT_MS:
                raise HLCError(f"timestamp {stamp} is more than a day ahead of this clock")
            if stamp.wall_ms > self._last_ms:
                self._last_ms, self._counter = stamp.wall_ms, stamp.counter
            elif stamp.wall_ms == self._last_ms:
                self._counter = max(self._counter, stamp.counter)

    def _tick_counter(self) -> None:
        """Advance the logical counter, borrowing a millisecond when it overflows."""
        if self._counter >= MAX_COUNTER:
            self._last_ms += 1
            self._counter = 0
        else:
            self._counter += 1
