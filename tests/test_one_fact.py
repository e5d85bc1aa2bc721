"""Each shared fact has one definition: greps over the product packages that catch a copy."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from edge_node.store import meta
from sync import merge

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("edge_node", "sync", "certs", "hq", "local_ui")


def modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    """(path relative to the repository, parsed module) of each product source file."""
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def test_table_facts_live_in_the_merge_policy() -> None:
    """sync/ and hq/ never compare a table name: what differs per table is a Policy flag."""
    tables = merge.NODE_WRITABLE | set(merge.POLICIES)
    found = []
    for name, tree in modules("sync", "hq"):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Constant) and side.value in tables:
                    found.append(f"{name}:{node.lineno}: {side.value!r}")
    assert not found, found


def test_policy_flags() -> None:
    """Only citizen profiles are written across nodes; only the audit log is hash-chained."""
    assert [t for t in merge.NODE_WRITABLE if merge.policy_for(t).cross_node_writable] == [
        "citizens"]
    assert merge.hash_chained_tables() == ["audit_log"]
    assert merge.policy_for("audit_log").kind == merge.OWNED.kind


# Each file name of a node's data and sync directories, and the module that spells it.
FILE_NAMES = {
    "node.db": {"edge_node/paths.py"},
    "node.key": {"edge_node/paths.py", "certs/layout.py"},  # the DB key file; the sync key
    "sync.lock": {"edge_node/paths.py"},
    "exported_seq": {"edge_node/paths.py"},
    "backups": {"edge_node/paths.py"},
    "node.pem": {"certs/layout.py"},
    "node-hpke.key": {"certs/layout.py"},
    "fleet.key": {"certs/layout.py"},
    "ca.pem": {"certs/layout.py"},
    "crl.pem": {"certs/layout.py"},
}


def test_file_names_are_spelled_in_one_module() -> None:
    """No product module spells a data- or sync-directory file name but the one that owns it
    (prose in docstrings and messages may mention them; a string that *is* the name may not)."""
    found = []
    for name, tree in modules(*PRODUCT):
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and name not in FILE_NAMES.get(node.value, {name})):
                found.append(f"{name}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_port_imports_at_top_level() -> None:
    """With the paths in edge_node/paths.py, port.py needs no import hidden in a function
    (the old port ↔ runtime cycle), and never imports the runtime that starts the agent."""
    tree = dict(modules("edge_node"))["edge_node/replication/port.py"]
    hidden = [f"line {inner.lineno}" for fn in ast.walk(tree)
              if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
              for inner in ast.walk(fn) if isinstance(inner, ast.Import | ast.ImportFrom)]
    assert not hidden, hidden
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "edge_node.replication.runtime" not in imported


META_MODULE = "edge_node/store/meta.py"
SCHEMA_MODULE = "edge_node/store/schema.py"  # creates the table
# Keys that are nothing but node_meta keys (the others are also column or field names).
META_ONLY_KEYS = {k for k in meta.KEYS if k.startswith("sync_")} | {
    meta.REVOKED_KEY, meta.EPOCH_KEY}


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    owners = [tree, *(n for n in ast.walk(tree) if isinstance(
        n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))]
    return {id(o.body[0].value) for o in owners if o.body and isinstance(o.body[0], ast.Expr)
            and isinstance(o.body[0].value, ast.Constant)}


def test_node_meta_sql_lives_in_the_meta_module() -> None:
    """No product module but edge_node/store/meta.py names the node_meta table in code
    (SQL, `db.table("node_meta")`); docstrings may mention it."""
    found = []
    for name, tree in modules(*PRODUCT):
        if name in (META_MODULE, SCHEMA_MODULE):
            continue
        docs = docstrings(tree)
        found += [f"{name}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and re.search(r"\bnode_meta\b", node.value) and id(node) not in docs]
    assert not found, found


def test_node_meta_keys_are_defined_in_the_meta_module() -> None:
    """A node_meta key is a constant of edge_node/store/meta.py: no other module binds a
    name to a key string, passes a literal key to meta's functions, or spells a key that
    is nothing but a node_meta key."""
    found = []
    for name, tree in modules(*PRODUCT):
        if name == META_MODULE:
            continue
        for node in ast.walk(tree):
            value = getattr(node, "value", None)
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
                    value, ast.Constant) and value.value in meta.KEYS:
                found.append(f"{name}:{node.lineno}: binds {value.value!r}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "meta" \
                    and any(isinstance(a, ast.Constant) for a in node.args[1:2]):
                found.append(f"{name}:{node.lineno}: literal key")
            elif isinstance(node, ast.Constant) and node.value in META_ONLY_KEYS:
                found.append(f"{name}:{node.lineno}: {node.value!r}")
    assert not found, found
