"""How local_ui is put together: no import cycle through the package, screens named after pages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

from flask import Flask

LOCAL_UI = Path(__file__).resolve().parents[2] / "local_ui"


def test_package_imports_nothing() -> None:
    """`import local_ui` loads no screen module: `local_ui.web` imports the package, not back."""
    probe = ("import sys, local_ui; "
             "print(sorted(m for m in sys.modules if m.startswith('local_ui.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
    assert (LOCAL_UI / "app.py").exists()


SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|DROP|ALTER)\b")
DB_CALLS = frozenset({"execute", "executemany", "executescript", "query", "table", "conn"})


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_in(source: str) -> list[str]:
    """Database calls (`.execute(`, `.query(`, `.table(`...) and SQL in string literals."""
    tree = ast.parse(source)
    skip, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in DB_CALLS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in skip and SQL_WORDS.search(node.value):
            found.append(f"line {node.lineno}: {node.value[:40]!r}")
    return found


def test_sql_in_finds_queries() -> None:
    """The probe sees a query, a table call and SQL text, and not a docstring about SQL."""
    assert len(sql_in('"""Polls PRAGMA data_version."""\n'
                      'db.query("SELECT 1")\ndb.table("x")\nq = "DELETE FROM t"\n')) == 4
    assert sql_in('"""SELECT in a docstring only."""\nx = 1\n') == []


def test_no_sql_in_local_ui() -> None:
    """Screens read through edge_node's domain functions, shared with the API: no SQL here."""
    found = {str(path.relative_to(LOCAL_UI)): hits for path in sorted(LOCAL_UI.rglob("*.py"))
             if (hits := sql_in(path.read_text(encoding="utf-8")))}
    assert found == {}


def test_screen_modules_are_named_after_their_screens(ui_app: Flask) -> None:
    """Each views module is registered and its blueprint carries its name (`_screen` added
    where the API has a blueprint of that name); the URLs stayed as they were."""
    from local_ui.app import SCREENS

    modules = {f"local_ui.views.{p.stem}" for p in (LOCAL_UI / "views").glob("*.py")
               if p.stem != "__init__"}
    assert modules == set(SCREENS)
    for name in SCREENS:
        short = name.rsplit(".", 1)[1]
        assert import_module(name).bp.name in (short, f"{short}_screen")
    routes = {(rule.rule, rule.endpoint) for rule in ui_app.url_map.iter_rules()}
    assert MOVED_ROUTES - routes == set()


MOVED_ROUTES = {
    ("/board", "board.board"), ("/board/live", "board.board_live"),
    ("/kiosk", "kiosk.kiosk"), ("/kiosk/rate", "kiosk.rate"),
    ("/applications", "applications_screen.applications_list"),
    ("/applications", "applications_screen.application_create"),
    ("/applications/new", "applications_screen.application_form"),
    ("/applications/<application_id>/status", "applications_screen.application_status"),
    ("/volunteers", "volunteers_screen.volunteers_page"),
    ("/volunteers", "volunteers_screen.volunteer_add"),
    ("/volunteers/<volunteer_id>/shifts", "volunteers_screen.shift_add"),
    ("/volunteer-shifts/<shift_id>/<action>", "volunteers_screen.shift_action"),
    ("/sync", "sync_screen.sync"), ("/sync/live", "sync_screen.sync_live"),
    ("/sync/export", "sync_screen.export"), ("/technician", "technician.technician"),
}
