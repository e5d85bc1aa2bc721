"""The node's JSON API: `create_app` is the only way an app is made."""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from flask import Flask

from edge_node import lifecycle
from edge_node.api import errors, metrics
from edge_node.node import Node

# Blueprint modules, each exporting `bp`; order is the OpenAPI order.
BLUEPRINTS = (
    "edge_node.api.system",
    "edge_node.api.visits",
    "edge_node.api.queue",
    "edge_node.api.reports",
    "edge_node.api.citizens",
    "edge_node.api.applications",
    "edge_node.api.feedback",
    "edge_node.api.volunteers",
    "edge_node.api.sync",
)


def create_app(node: Node, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app over an opened Node."""
    app = Flask("edge_node")
    app.config.update(
        MAX_CONTENT_LENGTH=node.settings["max_body_bytes"],
        JSON_SORT_KEYS=False,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)
    lifecycle.init_app(app, node)
    errors.init_app(app)
    for name in BLUEPRINTS:
        app.register_blueprint(import_module(name).bp)
    metrics.init_app(app)
    logging.getLogger("edge_node").setLevel(node.settings["log_level"])
    return app
