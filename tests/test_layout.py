"""The layout stays livable: layering contracts hold and can fail, no import cycles,
no oversized modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge_node", "sync", "local_ui", "certs", "hq")
MAX_LINES = 400
# A module split out of another must not import it back (not even inside a function).
SPLIT_FROM = {
    "edge_node/replication/downstream.py": "edge_node.replication.port",
    "hq/chain.py": "hq.ingest",
    "edge_node/store/meta.py": "edge_node.replication.port",
}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the project's contracts over the tree at `cwd`."""
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--config", str(cwd / "pyproject.toml")],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The contracts really bite: `sync` importing the node fails the lint."""
    for name in (*PACKAGES, "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / name)
    hlc = tmp_path / "sync" / "hlc.py"
    hlc.write_text(hlc.read_text() + "\nimport edge_node.node  # forbidden\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "sync.hlc -> edge_node.node" in result.stdout


def import_graph() -> dict[str, set[str]]:
    """Each module's imports within the product, plus the implicit import of every
    enclosing package (`import a.b.c` runs `a/__init__` and `a/b/__init__` first)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        targets = set(graph.find_modules_directly_imported_by(module))
        for target in list(targets):
            parts = target.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts)))
        targets.discard(module)
        edges[module] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


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


def test_split_modules_do_not_import_back() -> None:
    """downstream.py, hq/chain.py and store/meta.py never import the module they left."""
    found = [f"{name} imports {origin}" for name, origin in SPLIT_FROM.items()
             if origin in imported_modules(ast.parse((ROOT / name).read_text()))]
    assert not found, found


def test_no_function_local_imports() -> None:
    """Imports sit at the top of a module, where the layering lint and the cycle check see
    them: none hidden inside a function to dodge a cycle (psycopg, loaded only for a
    PostgreSQL store, is the one lazy import)."""
    hidden = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                hidden += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(fn)
                           if isinstance(node, ast.Import | ast.ImportFrom)
                           and "psycopg" not in ast.unparse(node)]
    assert hidden == []
