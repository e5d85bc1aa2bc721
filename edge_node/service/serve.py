"""`edge-node serve`: waitress in front, APScheduler jobs behind, clean SIGTERM."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from waitress.server import create_server

from edge_node.config import Settings
from edge_node.node import Node
from edge_node.replication.runtime import SyncLock, start_agent
from edge_node.service.jobs import add_jobs
from edge_node.service.systemd_notify import ServiceNotifier, serving_alive
from local_ui import create_app  # the JSON API plus the staff screens

log = logging.getLogger("edge_node.service.serve")


class _Stop(SystemExit):
    """Raised in the main thread by SIGTERM; waitress shuts its workers down on it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Leave waitress's loop; in-flight requests finish, then the node closes."""
    raise _Stop(0)


def run_server(settings: Settings) -> None:
    """Run until SIGTERM or Ctrl-C; every acknowledged write is durable before exit."""
    logging.basicConfig(level=settings["log_level"],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = Node(settings)
    scheduler = BackgroundScheduler(timezone=settings["timezone"])
    add_jobs(scheduler, node)
    lock = SyncLock(settings)
    agent = start_agent(node, lock)
    app = create_app(node)
    app.extensions["edge_agent"] = agent
    server = create_server(app, host=settings["host"], port=settings["port"],
                           threads=settings["threads"], ident="edge-node")
    signal.signal(signal.SIGTERM, _on_sigterm)
    scheduler.start()
    log.info("node %s serving on http://%s:%s", node.node_id, settings["host"],
             settings["port"])
    notifier = ServiceNotifier()  # systemd: READY now the socket is bound, then watchdog
    notifier.ready(f"serving node {node.node_id} on port {settings['port']}",
                   lambda budget: serving_alive(node.writer, settings["host"],
                                                settings["port"], budget))
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        notifier.stopping()
        log.info("shutting down")
        scheduler.shutdown(wait=True)
        if agent is not None:
            agent.stop()
        lock.release()
        server.close()
        node.close()
        log.info("stopped")
