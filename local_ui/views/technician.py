"""The technician's page: node facts and settings, the sync figures, and `doctor`
results when that module is installed."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, request
from flask_babel import gettext
from werkzeug.wrappers import Response

from edge_node import __version__
from edge_node.config import SETTINGS
from edge_node.domain.roles import TECHNICIANS
from local_ui.security import node, screen
from local_ui.views.sync_screen import sync_data
from local_ui.web import render

bp = Blueprint("technician", __name__)
HIDDEN_SETTINGS = frozenset({"key_file"})
DOCTOR_STATUSES = ("PASS", "WARN", "FAIL", "SKIP")


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
