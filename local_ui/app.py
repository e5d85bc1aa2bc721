"""The node's app with the staff screens: `create_app(node)`.

It builds the node's JSON API app (`edge_node.api.create_app`) and adds the
screens to it, so one process serves both; `edge-node serve` uses it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from flask import Flask

from edge_node.api import create_app as create_api_app
from edge_node.node import Node
from local_ui import i18n, live, security, web

# Screen modules, each exporting `bp`.
SCREENS = (
    "local_ui.views.auth",
    "local_ui.views.reception",
    "local_ui.views.operator",
    "local_ui.views.board",
    "local_ui.views.kiosk",
    "local_ui.views.supervisor",
    "local_ui.views.applications",
    "local_ui.views.volunteers",
    "local_ui.views.sync_screen",
    "local_ui.views.technician",
)


def create_app(node: Node, test_config: dict[str, Any] | None = None) -> Flask:
    """The node's app with the staff screens registered."""
    app = create_api_app(node, test_config)
    security.init_app(app, node)
    i18n.init_app(app)
    web.init_app(app)
    live.init_app(app, node.settings["threads"])
    for name in SCREENS:
        app.register_blueprint(import_module(name).bp)
    return app
