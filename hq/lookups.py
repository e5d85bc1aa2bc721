"""A node's reception asks HQ for a citizen it does not hold (upstream kind `lookup`).

The request travels sealed to HQ like a batch and names the person by fleet
blind index only (sync/pii.py), never by CNIC, with the staff member who
asked. HQ finds the person (`hq_citizens.person_id`, hq/projections.py) and
queues the answer on the node's downstream queue as the kind `citizen`: the
person's first registration (the smallest id) with its values and field
clocks, sealed to that node's enrollment HPKE key for this request
(`sync.pii.seal_to_node`), or `{"found": false}`. The node fills the citizen
in under the same id, so its later edits merge into the same record at HQ
(citizens are cross-node writable, DESIGN "Ownership and merge").

Every lookup is audited in `hq_citizen_lookups` (when, which node, who, the
request, found / not found / rate limited, which citizen), in the transaction
that queues the answer; `edge-hq citizen reads` lists them with HQ's own reads.
A node may ask at most `LOOKUPS_PER_MINUTE` times a minute: beyond that HQ
answers nothing (the node's reception registers as it would offline), so a
hostile node cannot enumerate the fleet's citizens.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hq import pii
from hq.downstream import queue_item
from hq.store import HQDatabase
from sync.merge import FIELD_CLOCKS, State
from sync.pii import seal_to_node

LOOKUPS_PER_MINUTE = 30
WINDOW = timedelta(minutes=1)
MAX_INDEXES = 4
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
FLEET_INDEX = re.compile(r"^f[0-9]{1,9}:[0-9a-f]{64}$")
ACTOR_MAX = 100
SENT_FIELDS = ("id", "id_kind", "created_at", "updated_at")
UNCLOCKED = frozenset({"id", "created_at", "updated_at", FIELD_CLOCKS})
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LookupRequest:
    """A checked lookup: its id, the fleet indexes of the CNIC, and who asked."""

    request_id: str
    indexes: tuple[str, ...]
    actor: str


def parse_request(body: Any) -> LookupRequest:
    """The lookup in an opened envelope body; ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("lookup body must be an object")
    request_id, indexes, actor = body.get("request"), body.get("indexes"), body.get("actor")
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise ValueError("lookup needs a request id of 32 hex digits")
    if not isinstance(indexes, list) or not 1 <= len(indexes) <= MAX_INDEXES or not all(
            isinstance(i, str) and FLEET_INDEX.match(i) for i in indexes):
        raise ValueError(f"lookup needs 1..{MAX_INDEXES} fleet indexes (f<version>:<hex>)")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > ACTOR_MAX \
            or not actor.isprintable():
        raise ValueError(f"lookup needs the staff id who asked (1..{ACTOR_MAX} characters)")
    return LookupRequest(request_id, tuple(indexes), actor.strip())


def answer(tx: HQDatabase, node_id: str, request: LookupRequest, now: str,
           limit: int = LOOKUPS_PER_MINUTE) -> str:
    """Audit the lookup and queue its answer (caller's transaction); returns the outcome:
    `found`, `not_found` or `rate_limited` (nothing queued)."""
    tx.execute("SELECT 1 FROM hq_nodes WHERE node_id = ?" + tx.lock_clause(), [node_id])
    cutoff = (datetime.strptime(now, TIME_FORMAT) - WINDOW).strftime(TIME_FORMAT)
    recent = tx.execute("SELECT count(*) FROM hq_citizen_lookups WHERE node_id = ? AND at > ? "
                        "AND outcome <> 'rate_limited'", [node_id, cutoff]).fetchone()[0]
    if int(recent) >= limit:
        _audit(tx, node_id, request, now, "rate_limited", None)
        return "rate_limited"
    found = _citizen(tx, request.indexes)
    payload: dict[str, Any] = {"request": request.request_id, "found": found is not None}
    if found is not None:
        hpke = tx.execute("SELECT hpke_public FROM hq_nodes WHERE node_id = ?",
                          [node_id]).fetchone()[0]
        payload["sealed"] = seal_to_node(hpke, node_id, request.request_id, found)
    queue_item(tx, node_id, "citizen", json.dumps(payload, sort_keys=True))
    outcome = "found" if found is not None else "not_found"
    _audit(tx, node_id, request, now, outcome, found["id"] if found else None)
    return outcome


def _audit(tx: HQDatabase, node_id: str, request: LookupRequest, now: str, outcome: str,
           citizen_id: str | None) -> None:
    """One hq_citizen_lookups row."""
    tx.execute("INSERT INTO hq_citizen_lookups (id, at, node_id, actor, request_id, outcome, "
               "citizen_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
               [uuid.uuid4().hex, now, node_id, request.actor, request.request_id, outcome,
                citizen_id])


def _citizen(tx: HQDatabase, indexes: tuple[str, ...]) -> dict[str, Any] | None:
    """The person's first registration, in clear with its field clocks, or None.

    Only the current fleet version's index matches (HQ indexes under it); a node
    that has not the current key yet misses and registers, and HQ links it later.
    """
    marks = ", ".join("?" for _ in indexes)
    row = tx.execute(f"SELECT min(person_id) FROM hq_citizens WHERE cnic_index IN ({marks})",
                     list(indexes)).fetchone()
    if row is None or row[0] is None:
        return None
    held = tx.execute("SELECT state FROM hq_records WHERE tbl = 'citizens' AND pk = ?",
                      [row[0]]).fetchone()
    state = State.from_json(held[0] if held else None)
    visible = state.visible()
    if visible is None:
        return None
    key = pii.field_key(tx)
    try:
        clear = {name: pii.decrypt(key, "citizens", column, visible[column])
                 if visible.get(column) is not None else None
                 for name, column in (("cnic", "cnic_enc"), ("name", "name_enc"),
                                      ("phone", "phone_enc"))}
    except pii.PIIKeyError:  # a value HQ holds only in a node's old form: not servable
        return None
    clocks = {name: {"hlc": clock, "base": state.bases.get(name)}
              for name, clock in state.clocks.items()
              if name not in UNCLOCKED}
    return {**{name: visible.get(name) for name in SENT_FIELDS}, **clear, "clocks": clocks}


def lookups(db: HQDatabase, citizen_id: str | None = None) -> list[dict[str, Any]]:
    """The audit of nodes' lookups, newest first (optionally those that found one citizen)."""
    sql, params = ("SELECT at, node_id, actor, outcome, citizen_id, request_id "
                   "FROM hq_citizen_lookups"), []
    if citizen_id is not None:
        sql, params = sql + " WHERE citizen_id = ?", [citizen_id]
    rows = db.execute(sql + " ORDER BY at DESC, id", params).fetchall()
    return [{"at": r[0], "node_id": r[1], "actor": r[2], "outcome": r[3], "citizen_id": r[4],
             "request": r[5]} for r in rows]
