"""The fleet blind-index key on the node: opened from HQ's sealed form, kept, re-indexed.

HQ sends the key sealed to the node's enrollment HPKE key (sync/pii.py), in
the enrollment bundle and as the downstream kind `fleet_key`. The node opens
it with `node-hpke.key`, keeps it in the sync directory's `fleet.key` (0600,
store/keyfile.py) and re-indexes its citizens under it in the same write;
the re-indexed rows are captured and reach HQ like any change. An older
version than the one held changes nothing (downstream is idempotent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlite_utils import Database

from certs.layout import NODE_HPKE_KEY
from edge_node.domain import citizens
from edge_node.node import Node
from edge_node.paths import fleet_key_path, sync_dir
from edge_node.store.keyfile import save_fleet_key
from sync.identity import load_x25519_private
from sync.pii import open_fleet_key


def open_sealed(node: Node, payload: Any) -> tuple[int, bytes]:
    """(version, key) of a fleet key sealed to this node; SealedKeyError (a ValueError)."""
    private = load_x25519_private(sync_dir(node.settings) / NODE_HPKE_KEY)
    return open_fleet_key(private, node.node_id, payload)


def install_fleet_key(db: Database, node: Node, version: int, key: bytes) -> int:
    """Keep fleet key `version` and re-index the citizens under it (writer); returns how
    many were re-indexed (0 for a version older than the one held)."""
    current = node.keys.fleet_current
    if current is not None and current[0] > version:
        return 0
    fleet = save_fleet_key(fleet_key_path(node.settings), version, key)
    node.keys = dataclasses.replace(node.keys, fleet=fleet)
    return citizens.reindex(db, node.keys, node.timestamp())


def apply_fleet_key(db: Database, payload: Any, node: Node) -> None:
    """Downstream handler of `fleet_key` (replication/downstream.py)."""
    install_fleet_key(db, node, *open_sealed(node, payload))
