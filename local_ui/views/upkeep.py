"""Sync status (backlog, last ack, link, push progress, bundle export) and the
technician page (node facts and `doctor` results when that module is installed)."""

from __future__ import annotations

import dataclasses
import importlib
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, flash, render_template, send_file
from flask_babel import gettext
from werkzeug.wrappers import Response

from edge_node import __version__
from edge_node.config import SETTINGS
from edge_node.domain.roles import SUPERVISORS, TECHNICIANS
from edge_node.replication.port import NodeOutbox
from edge_node.replication.runtime import is_enrolled
from local_ui import live
from local_ui.security import node, screen
from local_ui.web import back, render

bp = Blueprint("upkeep", __name__)
SYNC_READERS = SUPERVISORS | TECHNICIANS
HIDDEN_SETTINGS = frozenset({"key_file"})
DOCTOR_STATUSES = ("PASS", "WARN", "FAIL", "SKIP")


def sync_data() -> dict[str, Any]:
    """The outbox summary with live agent figures when the agent runs in this process."""
    n = node()
    summary = NodeOutbox(n).summary()
    agent = current_app.extensions.get("edge_agent")
    live_status = agent.status() if agent is not None else {}
    last, acked = summary["last_seq"] or 0, summary["acked_seq"]
    return {**summary, "link": live_status.get("link", summary["link"]),
            "in_flight_batches": live_status.get("in_flight_batches", 0),
            "agent_running": agent is not None, "enrolled": is_enrolled(n.settings),
            "progress_max": max(last, acked, 1), "progress_value": acked}


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
    from edge_node.replication.port import export_bundle
    from sync.bundle import BundleError
    from sync.identity import IdentityError

    n = node()
    if not is_enrolled(n.settings):
        flash(gettext("This node is not enrolled with HQ yet, so it cannot sign a bundle."),
              "error")
        return back("upkeep.sync")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report = export_bundle(n, Path(tmp))
            data = report.path.read_bytes()
            name = report.path.name
    except (BundleError, IdentityError, ValueError, OSError) as exc:
        flash(gettext("Export failed: %(reason)s", reason=type(exc).__name__), "error")
        return back("upkeep.sync")
    return send_file(io.BytesIO(data), mimetype="application/octet-stream",
                     as_attachment=True, download_name=name)


def _doctor_module() -> Any:
    """`edge_node.ops.doctor` when another part of the product installed it, else None."""
    try:
        return importlib.import_module("edge_node.ops.doctor")
    except ImportError:
        return None


def _as_rows(results: Any) -> list[dict[str, Any]]:
    """Doctor results (`Result(check, status, finding, fix)`, or dicts) as template rows."""
    rows = []
    for item in results or []:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            item = dataclasses.asdict(item)
        if not isinstance(item, dict):
            continue
        status = str(item.get("status", "")).upper()
        rows.append({"name": item.get("check") or item.get("name") or "?",
                     "status": status if status in DOCTOR_STATUSES else "FAIL",
                     "detail": item.get("finding") or item.get("detail") or "",
                     "fix": item.get("fix") or ""})
    return rows


def _run_doctor(module: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Run the doctor's checks; (rows, error)."""
    runner = getattr(module, "run_checks", None) or getattr(module, "run", None)
    if runner is None:
        return [], gettext("The doctor module has no checks to run.")
    try:
        return _as_rows(runner(node().settings)), None
    except Exception as exc:  # the doctor is someone else's module: report, don't crash
        return [], gettext("The doctor stopped: %(reason)s", reason=type(exc).__name__)


@bp.route("/technician", methods=["GET", "POST"])
@screen(TECHNICIANS)
def technician() -> Response:
    """Node facts and settings; POST runs the doctor."""
    from flask import request

    n = node()
    module = _doctor_module()
    results, error = (_run_doctor(module) if module is not None and request.method == "POST"
                      else ([], None))
    values: Mapping[str, object] = n.settings
    settings = [(s.name, values[s.name], s.help) for s in SETTINGS
                if s.name not in HIDDEN_SETTINGS]
    return render("technician.html", version=__version__, node_id=n.node_id,
                  center_id=n.center_id, settings=settings, doctor=module is not None,
                  results=results, error=error, ran=request.method == "POST",
                  sync=sync_data())
