"""Identifiers made offline without coordination, and the node's notion of time."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix ms, then random bits; sorts by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | (0x7 << 76)  # version 7
    value = value & ~(0x3 << 62) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def new_node_id() -> str:
    """Short random node id, safe for MQTT topics and references (e.g. `N7K2QX`)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "N" + "".join(secrets.choice(alphabet) for _ in range(5))


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC text with microseconds, the storage form of every timestamp."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Inverse of `iso`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def business_date(moment: datetime, timezone: str) -> str:
    """The center's calendar day (YYYY-MM-DD) at `moment`."""
    return moment.astimezone(ZoneInfo(timezone)).date().isoformat()
