"""MQTT topic names under one versioned prefix."""

from __future__ import annotations

from certs.broker import NODE_ID

ROOT = "khidmat/v1"
SHARE_GROUP = "hq"


def up(node_id: str) -> str:
    """Batches and downstream acks, node to HQ (QoS 1)."""
    return f"{ROOT}/node/{node_id}/up"


def ack(node_id: str) -> str:
    """HQ's cumulative ack to one node."""
    return f"{ROOT}/node/{node_id}/ack"


def down(node_id: str) -> str:
    """HQ to one node: staff, decisions, catalog, revocations."""
    return f"{ROOT}/node/{node_id}/down"


def status(node_id: str) -> str:
    """Retained node health and its last will."""
    return f"{ROOT}/node/{node_id}/status"


BROADCAST_DOWN = f"{ROOT}/broadcast/down"
HQ_UP_SUBSCRIPTION = f"$share/{SHARE_GROUP}/{ROOT}/node/+/up"
HQ_STATUS_SUBSCRIPTION = f"{ROOT}/node/+/status"


def node_of(topic: str) -> str | None:
    """The node id in a per-node topic, or None when the topic is not one."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{ROOT}/node" and NODE_ID.match(parts[3]):
        return parts[3]
    return None
