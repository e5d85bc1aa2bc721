"""How local_ui is put together: no import cycle through the package, screens named after pages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

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
