"""`edge-node serve`: the composition root. Waitress in front; the scheduler, the sync
agent and the live screens registered with the app; a clean stop on SIGTERM.

This is the one module allowed to import `local_ui` (import-linter's single exception):
it wires the node, the staff screens and the agent into one process.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from waitress.server import create_server

from edge_node import lifecycle
from edge_node.config import Settings
from edge_node.node import Node
from edge_node.replication import runtime
from edge_node.service import jobs
from edge_node.service.systemd_notify import ServiceNotifier, serving_alive
from local_ui.app import create_app  # the JSON API plus the staff screens

log = logging.getLogger("edge_node.service.serve")


class _Stop(SystemExit):
    """Raised in the main thread by SIGTERM; waitress shuts its workers down on it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Leave waitress's loop; in-flight requests finish, then the node closes."""
    raise _Stop(0)


def run_server(settings: Settings) -> None:
    """Run until SIGTERM or Ctrl-C; every acknowledged write is durable before exit.

    Start: node (writer, checkpointer) → app (API, screens, live streams) → scheduler
    → sync agent → listening socket → READY. Stop, in reverse: agent, scheduler, live
    streams (each registered with `lifecycle.on_stop`), then the socket and the node.
    """
    logging.basicConfig(level=settings["log_level"],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = Node(settings)
    app = create_app(node)
    signal.signal(signal.SIGTERM, _on_sigterm)
    notifier = ServiceNotifier()  # systemd: READY once the socket is bound, then watchdog
    server = None
    try:
        jobs.init_app(app, node)
        runtime.init_app(app, node)
        server = create_server(app, host=settings["host"], port=settings["port"],
                               threads=settings["threads"], ident="edge-node")
        log.info("node %s serving on http://%s:%s", node.node_id, settings["host"],
                 settings["port"])
        notifier.ready(f"serving node {node.node_id} on port {settings['port']}",
                       lambda budget: serving_alive(node.writer, settings["host"],
                                                    settings["port"], budget))
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this
        notifier.stopping()
        log.info("shutting down")
        lifecycle.stop_all(app)
        if server is not None:
            server.close()
        node.close()
        log.info("stopped")
