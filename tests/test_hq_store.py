"""HQ's store at rest: SQLite encrypted with SQLCipher, private files; PostgreSQL over TLS."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from hq.cli.main import main as hq_cli
from hq.store import HQDatabase, StoreError, key_path


def mode(path: Path) -> int:
    """Permission bits."""
    return stat.S_IMODE(path.stat().st_mode)


def make_store(path: Path) -> None:
    """Create a store holding one record and close it."""
    db = HQDatabase(str(path))
    with db.transaction():
        db.execute("INSERT INTO hq_meta (key, value) VALUES ('secret', 'Zainab Bibi')")
    db.close()


def test_new_sqlite_store_is_encrypted_and_private(tmp_path: Path) -> None:
    """A new store: 0700 directory, 0600 store, WAL and key file; no plaintext on disk."""
    path = tmp_path / "var-hq" / "hq.db"
    make_store(path)
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600 and mode(key_path(path)) == 0o600
    for extra in path.parent.iterdir():
        assert mode(extra) & 0o077 == 0, extra
    raw = b"".join(p.read_bytes() for p in path.parent.iterdir())
    assert b"SQLite format 3" not in path.read_bytes()[:16]
    assert b"Zainab" not in raw and b"hq_meta" not in raw
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(path).execute("SELECT count(*) FROM sqlite_master").fetchone()
    db = HQDatabase(str(path))  # reopens with its key
    assert db.execute("SELECT value FROM hq_meta WHERE key = 'secret'").fetchone()[0] == \
        "Zainab Bibi"
    db.close()


def test_store_refuses_unsafe_or_missing_keys(tmp_path: Path) -> None:
    """A group/world-readable key file, a lost key, a wrong key, a shared directory: refused
    with one line naming the fix; `edge-hq` says it without a traceback."""
    path = tmp_path / "hq" / "hq.db"
    make_store(path)
    key = key_path(path)
    key.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        HQDatabase(str(path))
    result = CliRunner().invoke(hq_cli, ["--db", str(path), "fleet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "readable by other users" in result.output
    key.chmod(0o600)
    saved = key.read_text()
    key.write_text("00" * 32)
    with pytest.raises(StoreError, match="wrong key file"):
        HQDatabase(str(path))
    key.unlink()
    with pytest.raises(StoreError, match="key file is missing"):
        HQDatabase(str(path))
    key.write_text(saved)
    key.chmod(0o600)
    HQDatabase(str(path)).close()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    with pytest.raises(StoreError, match="chmod 700"):
        HQDatabase(str(shared / "hq.db"))
    assert list(shared.iterdir()) == []


@pytest.mark.parametrize("url", [
    "postgresql://hq@db.hq.invalid/hq",
    "postgresql://hq@db.hq.invalid/hq?sslmode=prefer",
    "postgres://hq@10.9.8.7:5432/hq?sslmode=disable",
    "postgresql:///hq?host=db.hq.invalid",
])
def test_postgresql_to_another_host_needs_tls(url: str) -> None:
    """HQ's data never crosses a network to PostgreSQL in clear: refused before connecting."""
    with pytest.raises(StoreError, match="sslmode=verify-full"):
        HQDatabase(url)
    result = CliRunner().invoke(hq_cli, ["--db", url, "fleet"])
    assert result.exit_code == 1 and "without TLS" in result.output


def test_local_postgresql_needs_no_tls(hq_db: HQDatabase) -> None:
    """Loopback and Unix sockets cross no network: the store opens (both stores work)."""
    assert hq_db.execute("SELECT count(*) FROM hq_nodes").fetchone()[0] == 0
