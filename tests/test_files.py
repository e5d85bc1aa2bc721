"""The one durable file writer (certs/files.py): what the PKI publishes survives a crash."""

from __future__ import annotations

import ast
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from certs import files
from certs.authority import init_authority, open_authority
from tests.test_one_fact import modules

Inode = tuple[int, int]


def inode(path: Path) -> Inode:
    """(device, inode) of a path."""
    info = path.stat()
    return info.st_dev, info.st_ino


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Inode]:
    """Record the (device, inode) of everything fsynced (the real fsync still runs)."""
    seen: list[Inode] = []
    real: Callable[[int], None] = os.fsync

    def recording(fd: int) -> None:
        info = os.fstat(fd)
        seen.append((info.st_dev, info.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


def test_ca_cert_and_crl_are_fsynced_with_their_directory(tmp_path: Path,
                                                         fsynced: list[Inode]) -> None:
    """ca.pem and crl.pem (which the broker reads: a lost CRL locks clients out) reach the disk,
    and so does the rename that put them in place; they stay world-readable."""
    auth = init_authority(tmp_path / "keys", ["localhost"])
    for name in ("ca.pem", "crl.pem"):
        assert inode(auth.directory / name) in fsynced, name
        assert (auth.directory / name).stat().st_mode & 0o777 == 0o644
    assert inode(auth.directory) in fsynced
    fsynced.clear()
    open_authority(auth.directory).write_crl([1234])
    assert inode(auth.crl_path) in fsynced and inode(auth.directory) in fsynced


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path: Path,
                                                        fsynced: list[Inode]) -> None:
    """The target holds the new bytes with the asked mode; no temporary file is left."""
    target = tmp_path / "sub" / "file.pem"
    files.write_atomic(target, b"old")
    files.write_atomic(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.pem"]
    assert inode(target) in fsynced and inode(target.parent) in fsynced


def test_create_new_refuses_an_existing_file(tmp_path: Path) -> None:
    """A key file is made once; an existing one is never overwritten."""
    target = tmp_path / "node.key"
    files.create_new(target, b"first")
    with pytest.raises(FileExistsError):
        files.create_new(target, b"second")
    assert target.read_bytes() == b"first" and target.stat().st_mode & 0o777 == 0o600


def test_only_the_writer_renames() -> None:
    """No product module renames files itself: every rename goes through certs/files.py."""
    found = []
    for name, tree in modules("edge_node", "sync", "certs", "hq", "local_ui"):
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in {"replace", "rename"}
                    and isinstance(node.value, ast.Name) and node.value.id == "os"
                    and name != "certs/files.py"):
                found.append(f"{name}:{node.lineno}")
    assert not found, found
