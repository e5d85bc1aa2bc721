"""Starting the sync agent for a node, when the node is enrolled."""

from __future__ import annotations

import fcntl
import logging
import os
from typing import IO

from flask import Flask

from edge_node import __version__, lifecycle
from edge_node.config import Settings
from edge_node.node import Node
from edge_node.paths import is_enrolled, lock_path, sync_dir
from edge_node.replication.port import NodeOutbox
from sync.agent import Agent
from sync.identity import IdentityError, load_node_identity

log = logging.getLogger(__name__)

class SyncLock:
    """One agent per node: two MQTT clients with the same id would evict each other."""

    def __init__(self, settings: Settings) -> None:
        """Lock file inside the data directory."""
        self.path = lock_path(settings)
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        handle = self.path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        os.chmod(self.path, 0o600)
        self._handle = handle
        return True

    def release(self) -> None:
        """Drop the lock."""
        if self._handle:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def start_agent(node: Node, lock: SyncLock) -> Agent | None:
    """Start the agent if enabled, enrolled and not already running elsewhere."""
    if not node.settings["sync_enabled"]:
        log.info("sync disabled by setting; the node works offline")
        return None
    if not is_enrolled(node.settings):
        log.info("node not enrolled yet; working offline (see docs/technician-guide.md)")
        return None
    if not lock.acquire():
        log.warning("another process is syncing this node; not starting a second agent")
        return None
    try:
        identity = load_node_identity(sync_dir(node.settings), node.node_id)
    except IdentityError as exc:
        log.error("sync keys unusable (%s); working offline", exc)
        lock.release()
        return None
    agent = Agent(NodeOutbox(node), identity, __version__)
    agent.start()
    log.info("sync agent started towards %s:%s", identity.broker_host, identity.broker_port)
    return agent


def init_app(app: Flask, node: Node) -> Agent | None:
    """Start the node's agent for `app` (when enabled, enrolled and not running elsewhere)
    and register its stop: the agent says `offline`, disconnects, and the lock is freed."""
    lock = SyncLock(node.settings)
    agent = start_agent(node, lock)
    lifecycle.set_agent(app, agent)

    def stop() -> None:
        if agent is not None:
            agent.stop()
        lock.release()

    lifecycle.on_stop(app, "sync agent", stop)
    return agent
