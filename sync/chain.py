"""The hash chain of a node's audit log, shared by the node (append, verify) and HQ (verify).

Each entry's hash is SHA-256 over the canonical JSON of its fields including
the previous entry's hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

GENESIS_HASH = "0" * 64
HASHED_FIELDS = ("id", "seq", "at", "actor_id", "actor_role", "action", "entity",
                 "entity_id", "detail", "prev_hash")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the hashed fields."""
    canonical = json.dumps({k: entry[k] for k in HASHED_FIELDS}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
