"""Each concern registers its own start and stop with the app; `stop_all` runs the stops
newest first and one failing stop does not skip the others."""

from __future__ import annotations

import pytest
from flask import Flask

from edge_node import lifecycle
from edge_node.node import Node
from edge_node.replication import runtime
from edge_node.service import jobs
from local_ui import live
from local_ui.app import create_app


def test_stops_run_newest_first_and_survive_a_failure(node: Node,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("t")
    lifecycle.init_app(app, node)
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("boom")

    lifecycle.on_stop(app, "first", lambda: ran.append("first"))
    lifecycle.on_stop(app, "broken", broken)
    lifecycle.on_stop(app, "last", lambda: ran.append("last"))
    lifecycle.stop_all(app)
    assert ran == ["last", "broken", "first"]
    assert "stopping broken failed" in caplog.text
    lifecycle.stop_all(app)  # nothing left: a second stop is harmless
    assert ran == ["last", "broken", "first"]


def test_serve_registers_every_concern_and_stops_them_all(node: Node) -> None:
    """What `edge-node serve` wires: metrics, the agent, the scheduler and the live streams stop
    (newest first) before the node closes (the caller's last step)."""
    app = create_app(node)
    scheduler = jobs.init_app(app, node)
    agent = runtime.init_app(app, node)  # the test node is not enrolled: no agent
    assert agent is None and lifecycle.running(app).agent is None
    names = [name for name, _ in lifecycle.running(app).stops]
    assert names == ["metrics", "live screens", "scheduler", "sync agent"]
    assert node.writer.commit_listeners
    stream_stop = app.extensions[live.STOP_EXTENSION]
    assert scheduler.running and not stream_stop.is_set()
    lifecycle.stop_all(app)
    assert stream_stop.is_set() and not scheduler.running and not node.writer.commit_listeners
    with app.app_context():
        assert lifecycle.current_node() is node and lifecycle.current_agent() is None
