"""Asking HQ for a citizen this node does not hold (reception, online only).

Reception looks a CNIC up here first. When it is not here and the agent is
online, `ask_hq` sends HQ a `lookup` (sync/batches.py: sealed to HQ and signed
like a batch) naming the person by the fleet blind indexes of the CNIC only,
and the staff member asking. HQ audits it and answers on the downstream queue
with the kind `citizen` (hq/lookups.py): the citizen sealed to this node for
this request, or not found. The downstream handler (`apply_citizen`, run by
the agent's thread in the writer) opens it and fills the citizen in
(`citizens.receive`); once that write has committed, `NodeOutbox.apply_down`
calls `release`, which wakes the request thread waiting on an Event for at
most `WAIT_S`. Nothing waits on paho's thread or holds the writer.

Offline, timed out, no fleet key yet, or rate limited at HQ: reception goes
on as it would offline (registers the citizen; HQ links the two later). An
answer that arrives after the wait still fills the citizen in.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlite_utils import Database

from certs.layout import NODE_HPKE_KEY
from edge_node.domain import citizens
from edge_node.node import Node
from edge_node.paths import sync_dir
from sync import batches, topics
from sync.identity import load_x25519_private
from sync.pii import fleet_index, open_at_node

if TYPE_CHECKING:
    from sync.agent import Agent

log = logging.getLogger(__name__)
WAIT_S = 3.0
Outcome = Literal["found", "not_found", "unavailable"]


@dataclass
class _Waiter:
    """One request thread waiting for HQ's answer."""

    event: threading.Event = field(default_factory=threading.Event)
    citizen_id: str | None = None


class Desk:
    """Requests waiting for HQ, by request id; answers staged in the writer, released
    after their commit (so a woken reader sees the citizen)."""

    def __init__(self) -> None:
        """No one waits yet."""
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._staged: dict[str, dict[str, str | None]] = {}  # node id -> request -> citizen

    def open(self, request_id: str) -> _Waiter:
        """Register a waiter before the request is sent."""
        waiter = _Waiter()
        with self._lock:
            self._waiting[request_id] = waiter
        return waiter

    def close(self, request_id: str) -> None:
        """The request thread stopped waiting."""
        with self._lock:
            self._waiting.pop(request_id, None)

    def stage(self, node_id: str, request_id: str, citizen_id: str | None) -> None:
        """An answer applied in the current write of `node_id` (its writer thread)."""
        with self._lock:
            self._staged.setdefault(node_id, {})[request_id] = citizen_id

    def release(self, node_id: str) -> None:
        """The node's write committed: wake the requests whose answers it held."""
        with self._lock:
            staged = self._staged.pop(node_id, {})
            for request_id, citizen_id in staged.items():
                waiter = self._waiting.get(request_id)
                if waiter is not None:
                    waiter.citizen_id = citizen_id
                    waiter.event.set()

    def discard(self, node_id: str) -> None:
        """The node's write failed: its answers never happened."""
        with self._lock:
            self._staged.pop(node_id, None)


DESK = Desk()


def ask_hq(node: Node, agent: Agent | None, cnic: str, actor_id: str,
           wait_s: float = WAIT_S) -> tuple[Outcome, dict[str, Any] | None]:
    """Ask HQ for the citizen of a (valid, normalised) CNIC; ("found", citizen) once it is
    filled in here, ("not_found", None), or ("unavailable", None): offline, no fleet key,
    no answer within `wait_s`."""
    indexes = [fleet_index(version, key, cnic) for version, key in node.keys.fleet]
    if agent is None or not indexes or not agent.link.connected:
        return "unavailable", None
    request_id = uuid.uuid4().hex
    waiter = DESK.open(request_id)
    try:
        payload = batches.seal_request(agent.identity, "lookup", {
            "request": request_id, "indexes": indexes, "actor": actor_id[:100] or "unknown"})
        if not agent.link.publish(topics.up(agent.identity.node_id), payload, qos=1):
            return "unavailable", None
        if not waiter.event.wait(wait_s):
            log.info("HQ did not answer a citizen lookup within %.1f s", wait_s)
            return "unavailable", None
    finally:
        DESK.close(request_id)
    if waiter.citizen_id is None:
        return "not_found", None
    return "found", citizens.get_citizen(node.reader(), node.keys, waiter.citizen_id)


def apply_citizen(db: Database, payload: Any, node: Node) -> None:
    """Downstream handler of `citizen` (replication/downstream.py): HQ's answer to a lookup.

    Found: opened with this node's HPKE key and filled in; the waiting request
    (if still waiting) is woken after the commit.
    """
    request_id = payload["request"]
    if not isinstance(request_id, str):
        raise TypeError("request must be text")
    citizen_id = None
    if payload["found"] is True:
        private = load_x25519_private(sync_dir(node.settings) / NODE_HPKE_KEY)
        data = open_at_node(private, node.node_id, request_id, payload["sealed"])
        if not isinstance(data, dict):
            raise TypeError("citizen must be an object")
        for entry in (data.get("clocks") or {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("hlc"), str):
                node.clock.observe(entry["hlc"])  # edits here must order after HQ's
        citizen_id = citizens.receive(db, node.keys, data, node.timestamp())
    DESK.stage(node.node_id, request_id, citizen_id)
