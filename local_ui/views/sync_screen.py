"""The Sync screen: backlog, last ack, link, push progress, and the bundle export."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, flash, render_template, send_file
from flask_babel import gettext
from werkzeug.wrappers import Response

from edge_node import lifecycle
from edge_node.domain.roles import SUPERVISORS, TECHNICIANS
from edge_node.replication.port import export_bundle
from edge_node.replication.status import sync_status
from local_ui import live
from local_ui.security import node, screen
from local_ui.web import back, render
from sync.bundle import BundleError
from sync.identity import IdentityError

bp = Blueprint("sync_screen", __name__)
SYNC_READERS = SUPERVISORS | TECHNICIANS


def sync_data() -> dict[str, Any]:
    """The node's sync status (live agent figures when it runs here) and the progress bar."""
    status = sync_status(node(), lifecycle.current_agent())
    return {**status.as_dict(), "progress_value": status.acked_seq,
            "progress_max": max(status.last_seq or 0, status.acked_seq, 1)}


@bp.get("/sync")
@screen(SYNC_READERS)
def sync() -> Response:
    """Backlog, last ack, link state and push progress; export a bundle."""
    return render("sync.html", sync=sync_data())


@bp.get("/sync/live")
@screen(SYNC_READERS)
def sync_live() -> Response:
    """SSE: the sync figures as they move."""
    return live.stream(lambda: render_template("_sync_body.html", sync=sync_data()))


@bp.post("/sync/export")
@screen(SYNC_READERS)
def export() -> Any:
    """Everything HQ has not acknowledged as one bundle file, downloaded for the USB stick."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report = export_bundle(node(), Path(tmp))
            data = report.path.read_bytes()
            name = report.path.name
    except (BundleError, IdentityError, ValueError, OSError) as exc:
        unenrolled = isinstance(exc, BundleError) and exc.reason == "not_enrolled"
        flash(gettext("This node is not enrolled with HQ yet, so it cannot sign a bundle.")
              if unenrolled else gettext("Export failed: %(reason)s",
                                         reason=type(exc).__name__), "error")
        return back("sync_screen.sync")
    return send_file(io.BytesIO(data), mimetype="application/octet-stream",
                     as_attachment=True, download_name=name)
