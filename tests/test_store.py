"""The store: encryption at rest, the key file, migrations and the group-committing writer."""

from __future__ import annotations

import functools
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlite_utils import Database

from edge_node.bootstrap import InitError, init_node
from edge_node.config import Settings, load_settings
from edge_node.node import Node
from edge_node.paths import db_path, key_path
from edge_node.store.db import StoreError, integrity_check, open_database
from edge_node.store.keyfile import KeyFileError, create_key_file, load_key_file
from edge_node.store.migrations import MIGRATIONS, applied


def test_database_is_unreadable_without_the_key(node: Node) -> None:
    """Plain sqlite3 sees noise: the file is not a database to it."""
    raw = db_path(node.settings).read_bytes()
    assert not raw.startswith(b"SQLite format 3")
    plain = sqlite3.connect(db_path(node.settings))
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        plain.execute("SELECT count(*) FROM sqlite_master").fetchone()
    plain.close()


def test_catalog_names_are_not_in_the_file(node: Node) -> None:
    """Even known plaintext (a service name) does not appear in the encrypted file."""
    assert b"New smart NIC" not in db_path(node.settings).read_bytes()


def test_wrong_key_is_a_clear_error(node: Node, tmp_path: Path) -> None:
    """A different key file cannot open the database."""
    other = create_key_file(tmp_path / "other.key")
    with pytest.raises(StoreError, match="wrong key file"):
        open_database(db_path(node.settings), other)


def test_key_file_mode_is_0600(node: Node) -> None:
    """Only the owner may read the key."""
    assert key_path(node.settings).stat().st_mode & 0o777 == 0o600
    assert Path(node.settings["data_dir"]).stat().st_mode & 0o777 == 0o700


def test_readable_key_file_is_refused(tmp_path: Path) -> None:
    """A key file readable by others is refused with the fix in the message."""
    path = tmp_path / "node.key"
    create_key_file(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)


@pytest.mark.parametrize("content", ["", "{}", "not json", '{"db_key": "zz"}'])
def test_malformed_key_file_is_refused(tmp_path: Path, content: str) -> None:
    """A damaged key file is named, not a traceback."""
    path = tmp_path / "node.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="malformed"):
        load_key_file(path)


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    """Creating a second key file over the first would orphan the database."""
    path = tmp_path / "node.key"
    create_key_file(path)
    with pytest.raises(KeyFileError, match="exists already"):
        create_key_file(path)


def test_init_refuses_an_existing_node(settings: Settings) -> None:
    """Init never touches a database that exists."""
    before = db_path(settings).read_bytes()
    with pytest.raises(InitError, match="exists already"):
        init_node(settings, "ISB-01")
    assert db_path(settings).read_bytes() == before


def test_migrations_are_recorded_once(node: Node) -> None:
    """Every migration is listed in _migrations; reopening applies nothing again."""
    assert applied(node.reader()) == [name for name, _ in MIGRATIONS]
    node.close()
    again = Node(node.settings)
    assert applied(again.reader()) == [name for name, _ in MIGRATIONS]
    again.close()


def test_pragmas_give_durable_wal(node: Node) -> None:
    """WAL with synchronous=FULL on the writer connection."""
    conn = node.writer.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert integrity_check(node.reader()) == "ok"


def test_writer_group_commits_concurrent_writes(node: Node) -> None:
    """Many threads writing at once share transactions (fewer commits than writes)."""
    start_batches, start_jobs = node.writer.batches, node.writer.jobs
    barrier = threading.Barrier(16)

    def insert(db: Database, key: str) -> None:
        db.execute("INSERT INTO node_meta (key, value) VALUES (?, '1')", [key])

    def one(i: int) -> None:
        barrier.wait()
        for j in range(20):
            node.write(functools.partial(insert, key=f"t{i}-{j}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs, batches = node.writer.jobs - start_jobs, node.writer.batches - start_batches
    assert jobs == 320
    assert batches < jobs
    count = node.reader().execute("SELECT count(*) FROM node_meta WHERE key LIKE 't%'")
    assert count.fetchone()[0] == 320


def test_failing_write_does_not_undo_its_group(node: Node) -> None:
    """A job that raises rolls back alone; the others in its group commit."""
    def bad(db: Database) -> None:
        db.execute("INSERT INTO node_meta (key, value) VALUES ('bad', '1')")
        raise ValueError("boom")

    futures: list[Future[object]] = [node.writer.submit(lambda db: db.execute(
        "INSERT INTO node_meta (key, value) VALUES ('good1', '1')")),
        node.writer.submit(bad),
        node.writer.submit(lambda db: db.execute(
            "INSERT INTO node_meta (key, value) VALUES ('good2', '1')"))]
    futures[0].result()
    futures[2].result()
    with pytest.raises(ValueError, match="boom"):
        futures[1].result()
    keys = {r[0] for r in node.reader().execute("SELECT key FROM node_meta")}
    assert {"good1", "good2"} <= keys and "bad" not in keys


def test_unencrypted_mode_for_development(tmp_path: Path) -> None:
    """encrypt_db=false gives a plain SQLite file (development only)."""
    settings = load_settings(str(tmp_path / "dev"), overrides={"encrypt_db": False},
                             environ={})
    init_node(settings, "DEV-01")
    assert db_path(settings).read_bytes().startswith(b"SQLite format 3")


def test_readers_of_ended_threads_are_closed(node: Node) -> None:
    """paho runs each MQTT connection on a new thread that reads the node: 50 reconnects
    must not leave 50 open connections (file handles) behind."""
    def read_once() -> None:
        node.reader().execute("SELECT count(*) FROM node_meta").fetchone()

    before = node.open_readers()
    for _ in range(50):
        thread = threading.Thread(target=read_once)
        thread.start()
        thread.join()
    read_once()  # a new reader (this thread's) prunes the ended ones
    assert node.open_readers() <= before + 2
