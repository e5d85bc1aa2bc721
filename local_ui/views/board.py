"""The display board (TV): the numbers called and how many wait in each queue.

The device keeps its language in a cookie (`?lang=ur`), so a TV set up once stays set up.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from sqlite_utils import Database
from werkzeug.wrappers import Response

from edge_node.domain import queue
from edge_node.domain.roles import BOARD
from local_ui import live
from local_ui.lookups import local_time
from local_ui.security import node, screen
from local_ui.web import render

bp = Blueprint("board", __name__)
BOARD_ROWS = 8


def _board(db: Database) -> dict[str, Any]:
    """Called tickets (newest first) and how many wait in each queue."""
    called = queue.board(db, BOARD_ROWS)
    for row in called:
        row["time"] = local_time(row["called_at"])
    waiting = [q for q in queue.waiting_by_queue(db) if q["waiting"]]
    return {"called": called, "waiting": waiting,
            "latest_key": f"{called[0]['id']}:{called[0]['recall_count']}" if called else ""}


@bp.get("/board")
@screen(BOARD)
def board() -> Response:
    """The TV page; its live part comes over SSE."""
    return render("board.html", **_board(node().reader()))


@bp.get("/board/live")
@screen(BOARD)
def board_live() -> Response:
    """SSE: the called numbers whenever they change."""
    return live.stream(lambda: render_template("_board.html", **_board(node().reader())))
