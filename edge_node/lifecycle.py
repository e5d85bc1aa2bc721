"""What the running app holds and how it stops.

Each concern registers itself with the app in its own `init_app` (as Flask's
tutorial does): the API stores the node here, the sync runtime its agent, the
scheduler and the live screens their stops. `edge-node serve` then stops them
all in reverse order of registration with `stop_all`, before it closes the
node, so nothing outside a concern spells its key in `app.extensions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Flask, current_app

from edge_node.node import Node

if TYPE_CHECKING:
    from sync.agent import Agent

log = logging.getLogger(__name__)
EXTENSION = "khidmat_edge"


@dataclass
class Running:
    """The node, its agent (None when not syncing) and the stops, in registration order."""

    node: Node
    agent: Agent | None = None
    stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)


def init_app(app: Flask, node: Node) -> None:
    """Attach the node to `app` (the API's `create_app` calls this once)."""
    app.extensions[EXTENSION] = Running(node)


def running(app: Flask | None = None) -> Running:
    """What `app` (default: the current app) holds."""
    found: Running = (app or current_app).extensions[EXTENSION]
    return found


def current_node() -> Node:
    """The node of the app handling this request."""
    return running().node


def current_agent() -> Agent | None:
    """The sync agent of the app handling this request (None: not syncing)."""
    return running().agent


def set_agent(app: Flask, agent: Agent | None) -> None:
    """Record the agent the sync runtime started for `app`."""
    running(app).agent = agent


def on_stop(app: Flask, name: str, stop: Callable[[], None]) -> None:
    """Run `stop` when the app stops (after everything registered later)."""
    running(app).stops.append((name, stop))


def stop_all(app: Flask) -> None:
    """Every registered stop, newest first; one failing stop does not skip the others."""
    stops = running(app).stops
    while stops:
        name, stop = stops.pop()
        try:
            stop()
        except Exception:
            log.exception("stopping %s failed", name)
