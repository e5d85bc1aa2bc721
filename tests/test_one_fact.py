"""Each shared fact has one definition: greps over the product packages that catch a copy."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

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
