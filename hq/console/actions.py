"""The audit of every HQ console action: who, what, when, on what, with which outcome.

Rows go to `hq_actions` (migration 0006_console) in the caller's transaction or their
own; auditors and admins read them on the console's actions screen.
"""

from __future__ import annotations

import uuid
from typing import Any

from hq.dbapi import Tx
from hq.store import utc_now

KEYS = ("at", "actor", "action", "target", "outcome", "client", "detail")


def record(tx: Tx, actor: str, action: str, target: str | None = None,
           outcome: str = "ok", client: str | None = None, detail: str | None = None) -> None:
    """One audited action (the caller's transaction); `detail` e.g. a revocation's reason."""
    tx.execute("INSERT INTO hq_actions (id, at, actor, action, target, outcome, client, detail) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               [str(uuid.uuid4()), utc_now(), actor[:100], action[:60],
                None if target is None else target[:200], outcome[:40],
                None if client is None else client[:64],
                None if detail is None else detail[:1000]])


def recent(db: Tx, limit: int = 200, actor: str | None = None) -> list[dict[str, Any]]:
    """Newest actions first (optionally one actor's)."""
    where, params = ("WHERE actor = ? ", [actor]) if actor else ("", [])
    rows = db.execute(f"SELECT {', '.join(KEYS)} FROM hq_actions {where}"
                      "ORDER BY at DESC, id LIMIT ?", [*params, limit]).fetchall()
    return [dict(zip(KEYS, row, strict=True)) for row in rows]
