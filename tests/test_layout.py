"""Layout rules over the product packages: module size, and split modules that never import back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("edge_node", "sync", "local_ui", "certs", "hq")
MAX_LINES = 400
# A module split out of another must not import it back (not even inside a function).
SPLIT_FROM = {
    "edge_node/replication/downstream.py": "edge_node.replication.port",
    "hq/chain.py": "hq.ingest",
    "edge_node/store/meta.py": "edge_node.replication.port",
}


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module an `import` or `from … import` names, anywhere in the tree."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_product_module_over_max_lines() -> None:
    """Every product module fits in MAX_LINES lines (split along a seam when it grows)."""
    long = {str(path.relative_to(ROOT)): n for package in PRODUCT
            for path in sorted((ROOT / package).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_split_modules_do_not_import_back() -> None:
    """downstream.py, hq/chain.py and store/meta.py never import the module they left."""
    found = [f"{name} imports {origin}" for name, origin in SPLIT_FROM.items()
             if origin in imported_modules(ast.parse((ROOT / name).read_text()))]
    assert not found, found
