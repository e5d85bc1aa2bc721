"""Backups, restore and retire: online copies under load, checks before replacing, clean wipes."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_node.bootstrap import init_node
from edge_node.cli.main import main
from edge_node.config import ConfigError, Settings, load_settings
from edge_node.node import Node, load_keys
from edge_node.ops.backup import (
    Backup,
    BackupError,
    check_copy,
    create_backup,
    list_backups,
    manifest_path,
    open_copy,
    rotate,
    sha256_of,
)
from edge_node.ops.restore import database_in_use, restore_backup
from edge_node.paths import backup_dir, db_path
from edge_node.replication.port import NodeOutbox, restore_point
from edge_node.replication.runtime import SyncLock
from edge_node.store.db import DatabaseError
from edge_node.store.keyfile import NodeKeys
from tests.test_sync_e2e import issue_tickets


def scalar(node: Node, sql: str, params: list[Any] | None = None) -> Any:
    """One value read from the node."""
    return node.reader().execute(sql, params or []).fetchone()[0]


def cli(settings: Mapping[str, Any], *args: str, stdin: str | None = None) -> Any:
    """Run `edge-node --data-dir <node> ARGS` in-process."""
    return CliRunner().invoke(main, ["--data-dir", settings["data_dir"], *args], input=stdin)


def one_line_error(result: Any) -> str:
    """The CLI failed with exit 1 and one line, no traceback; return that line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return str(lines[0])


@pytest.fixture
def made(node: Node) -> Backup:
    """A backup of the node with a few tickets in it (node still open and serving)."""
    issue_tickets(node, 3)
    return create_backup(node.settings, node.keys)


def test_backup_while_staff_keep_writing(node: Node) -> None:
    """Writers never wait for the backup, and the copy is one consistent snapshot."""
    issue_tickets(node, 5)
    stop = threading.Event()
    written = [0] * 4

    def reception(slot: int) -> None:
        while not stop.is_set():
            issue_tickets(node, 1)
            written[slot] += 1

    threads = [threading.Thread(target=reception, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        backups = [create_backup(node.settings, node.keys) for _ in range(3)]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert sum(written) > 0
    for made in backups:
        assert made.path.stat().st_mode & 0o777 == 0o600
        assert made.manifest["sha256"] == sha256_of(made.path)
        conn = open_copy(made.path, node.keys)
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        captured = conn.execute("SELECT count(*) FROM sync_outbox WHERE tbl = 'tickets' "
                                "AND op = 'insert'").fetchone()[0]
        top = conn.execute("SELECT max(seq) FROM sync_outbox").fetchone()[0]
        conn.close()
        assert tickets == captured  # no half-copied transaction
        assert top == made.manifest["outbox_seq"]
        assert made.path.name.endswith(f"-{top}.db")
    assert scalar(node, "SELECT count(*) FROM tickets") == 5 + sum(written)


def test_copy_opens_with_the_key_only(made: Backup, node: Node, tmp_path: Path) -> None:
    """Encrypted with the node's database key: no key or another key reads nothing."""
    facts = check_copy(made.path, node.keys)
    assert facts["node_id"] == node.node_id and facts["center_id"] == "ISB-01"
    assert facts["migrations"] == made.manifest["migrations"]
    assert b"SQLite format 3" not in made.path.read_bytes()[:16]
    for keys in (None, NodeKeys(os.urandom(32), os.urandom(32), os.urandom(32))):
        conn = open_copy(made.path, keys)
        with pytest.raises(DatabaseError):
            conn.execute("SELECT count(*) FROM tickets").fetchone()
        conn.close()
    manifest = json.loads(manifest_path(made.path).read_text())
    assert manifest["node_id"] == node.node_id and "key" in manifest
    assert not list(made.path.parent.glob(".*"))  # no temp files left behind


def test_rotation_keeps_the_newest(node: Node) -> None:
    """Only this node's oldest backups go; another node's backups in the same place stay."""
    start = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)
    made = [create_backup(node.settings, node.keys, now=partial(operator.add, start,
                                                                 timedelta(days=d)))
            for d in range(5)]
    directory = backup_dir(node.settings)
    foreign = directory / "node-20200101T000000.000Z-7.db"
    foreign.write_bytes(b"x")
    manifest_path(foreign).write_text(json.dumps({"node_id": "NOTHER", "sha256": "0",
                                                  "outbox_seq": 7, "size": 1}))
    removed = rotate(directory, node.node_id, 3)
    assert removed == [m.path for m in made[:2]]
    assert [b.path for b in list_backups(directory, node.node_id)] == [m.path for m in made[2:]]
    assert foreign.exists() and not manifest_path(made[0].path).exists()
    with pytest.raises(ConfigError):
        rotate(directory, node.node_id, 0)


def test_daily_job_backs_up_and_rotates(node: Node) -> None:
    """The scheduler job writes into the backup directory and keeps `backup_keep`."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from edge_node.service.jobs import add_jobs, backup_daily

    node.settings["backup_keep"] = 2
    for _ in range(3):
        backup_daily(node)
    assert len(list_backups(backup_dir(node.settings), node.node_id)) == 2
    scheduler = BackgroundScheduler(timezone="Asia/Karachi")
    add_jobs(scheduler, node)
    assert scheduler.get_job("backup") is not None
    node.settings["backup_hour"] = 24
    with pytest.raises(ConfigError, match="backup_hour"):
        add_jobs(BackgroundScheduler(timezone="Asia/Karachi"), node)


def fingerprint(settings: Settings) -> tuple[str, list[str]]:
    """The database's bytes and the data directory's listing: equal means nothing changed."""
    names = set(os.listdir(settings["data_dir"])) - {"sync.lock"}  # the lock file is harmless
    return sha256_of(db_path(settings)), sorted(names)


def test_restore_puts_the_backup_back(made: Backup, node: Node) -> None:
    """Data as in the backup, old database kept, later records held behind a restore point."""
    issue_tickets(node, 4)
    settings, keys = node.settings, node.keys
    NodeOutbox(node).mark_acked(scalar(node, "SELECT max(seq) FROM sync_outbox"))
    node.close()
    restored = restore_backup(settings, keys, made.path)
    assert restored.restored_seq == made.manifest["outbox_seq"] and restored.discarded == 0
    assert restored.kept is not None and restored.kept.name.startswith("node.db.before-restore-")
    assert restored.kept.stat().st_mode & 0o777 == 0o600
    again = Node(settings)
    try:
        assert scalar(again, "SELECT count(*) FROM tickets") == 3
        point = restore_point(again.reader())
        assert point is not None and point[0] == restored.restored_seq
        issue_tickets(again, 1)
        port = NodeOutbox(again)
        assert all(r["seq"] <= restored.restored_seq for r in port.pending(0, 1000))
        port.mark_acked(10**6)  # an ack for lost records never reaches the held ones
        assert port.acked_seq() == restored.restored_seq
        assert port.stats()["count"] > 0
    finally:
        again.close()
    kept = open_copy(restored.kept, keys)
    assert kept.execute("SELECT count(*) FROM tickets").fetchone()[0] == 7
    kept.close()


def test_restore_refuses_newer_unsynced_records_without_force(made: Backup,
                                                              node: Node) -> None:
    """Unsynced records made after the backup would be lost: refuse, unless --force."""
    issue_tickets(node, 2)
    settings, keys = node.settings, node.keys
    node.close()
    before = fingerprint(settings)
    with pytest.raises(BackupError, match="unsynced records made after this backup"):
        restore_backup(settings, keys, made.path)
    assert fingerprint(settings) == before
    restored = restore_backup(settings, keys, made.path, force=True)
    assert restored.discarded > 0


@pytest.mark.parametrize("fix_checksum", [False, True], ids=["checksum", "integrity"])
def test_damaged_backup_is_refused(made: Backup, node: Node, fix_checksum: bool) -> None:
    """One flipped byte: refused by the checksum, or by SQLCipher/integrity_check."""
    settings = node.settings
    node.close()
    data = bytearray(made.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    made.path.write_bytes(bytes(data))
    if fix_checksum:
        manifest = json.loads(manifest_path(made.path).read_text())
        manifest["sha256"] = sha256_of(made.path)
        manifest_path(made.path).write_text(json.dumps(manifest))
    before = fingerprint(settings)
    line = one_line_error(cli(settings, "restore", str(made.path)))
    assert "damaged" in line
    assert ("checksum" in line) is not fix_checksum
    assert fingerprint(settings) == before


@pytest.fixture
def other_node(tmp_path: Path) -> Settings:
    """Settings of a second, separately initialised node (its own key)."""
    settings = load_settings(str(tmp_path / "other"), environ={})
    init_node(settings, "LHR-02")
    return settings


def test_foreign_backup_is_refused(node: Node, other_node: Settings) -> None:
    """Another node's backup is refused by id, and with a forged manifest by the key."""
    foreign = create_backup(other_node, load_keys(other_node))
    settings, own_id = node.settings, node.node_id
    node.close()
    before = fingerprint(settings)
    line = one_line_error(cli(settings, "restore", str(foreign.path)))
    assert "is a backup of node" in line
    manifest = json.loads(manifest_path(foreign.path).read_text())
    manifest["node_id"] = own_id
    manifest_path(foreign.path).write_text(json.dumps(manifest))
    line = one_line_error(cli(settings, "restore", str(foreign.path)))
    assert "cannot be opened with this node's key file" in line
    assert fingerprint(settings) == before


def test_restore_refuses_while_the_node_runs(made: Backup, node: Node) -> None:
    """The sync lock or an open database (another process) means the node is running."""
    settings = node.settings
    line = one_line_error(cli(settings, "restore", str(made.path)))
    assert "while the node is running" in line  # this process has it open
    node.close()
    lock = SyncLock(settings)
    assert lock.acquire()
    try:
        assert "sync lock" in one_line_error(cli(settings, "restore", str(made.path)))
    finally:
        lock.release()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom edge_node.config import load_settings\n"
         "from edge_node.node import Node\nn = Node(load_settings(sys.argv[1], environ={}))\n"
         "n.reader(); print('open', flush=True); time.sleep(60)", settings["data_dir"]],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"open\n"
        assert database_in_use(db_path(settings))
        assert "node.db is open" in one_line_error(cli(settings, "restore", str(made.path)))
    finally:
        child.kill()
        child.wait()
    assert not database_in_use(db_path(settings))  # a killed process leaves no lock
    assert cli(settings, "restore", str(made.path)).exit_code == 0


def test_restore_of_a_lost_database_and_a_pending_restore_point(made: Backup,
                                                                node: Node) -> None:
    """Disk replaced: restore needs only the key file; a backup of a restored node keeps
    its earlier (lower) restore point."""
    settings, keys = node.settings, node.keys
    node.close()
    for path in Path(settings["data_dir"]).glob("node.db*"):
        path.unlink()
    result = cli(settings, "restore", str(made.path))
    assert result.exit_code == 0, result.output
    assert "previous database" not in result.output
    again = Node(settings)
    point = restore_point(again.reader())
    issue_tickets(again, 2)
    second = create_backup(settings, keys)
    again.close()
    restore_backup(settings, keys, second.path, force=True)
    reopened = Node(settings)
    try:
        new_point = restore_point(reopened.reader())
        assert point is not None and new_point is not None
        assert new_point[0] == point[0] == made.manifest["outbox_seq"]
        assert new_point[1] != point[1]
    finally:
        reopened.close()


def test_cli_backup_messages(node: Node, tmp_path: Path) -> None:
    """`backup` prints where it wrote and reminds that the key is not inside."""
    result = cli(node.settings, "backup", "--out", str(tmp_path / "usb"))
    assert result.exit_code == 0, result.output
    assert "key file is not in the backup" in result.output
    assert len(list_backups(tmp_path / "usb", node.node_id)) == 1
    assert "edge-node init" in one_line_error(cli({"data_dir": str(tmp_path / "none")},
                                               "backup"))
    missing = one_line_error(cli(node.settings, "restore", str(tmp_path / "nope.db")))
    assert "no such backup file" in missing


# -- retire -------------------------------------------------------------------------------

def test_retire_refuses_unsynced_records(node: Node) -> None:
    """Records HQ never acknowledged and never exported: refused, with the way out."""
    issue_tickets(node, 2)
    settings = node.settings
    node.close()
    for args in (["retire"], ["retire", "--wipe", "--yes"]):
        line = one_line_error(cli(settings, *args))
        assert "unsynced records" in line and "edge-node sync export" in line
    assert db_path(settings).exists()


def test_export_then_retire_is_allowed(node: Node, tmp_path: Path) -> None:
    """`sync export` records the highest exported seq; retire then lets the node go."""
    from tests.sync_env import SyncEnv
    from tests.tls_broker import TLSBroker

    issue_tickets(node, 2)
    settings = node.settings
    env = SyncEnv(tmp_path / "pki", TLSBroker(tmp_path / "broker"), str(tmp_path / "hq.db"))
    env.enroll(node.node_id, Path(settings["data_dir"]) / "sync")
    last = scalar(node, "SELECT max(seq) FROM sync_outbox")
    node.close()
    (tmp_path / "usb").mkdir()
    result = cli(settings, "sync", "export", "--out", str(tmp_path / "usb"))
    assert result.exit_code == 0, result.output
    assert (Path(settings["data_dir"]) / "exported_seq").read_text().strip() == str(last)
    result = cli(settings, "retire")
    assert result.exit_code == 0 and "can be retired" in result.output


def test_wipe_removes_data_and_overwrites_keys(made: Backup, node: Node,
                                               tmp_path: Path) -> None:
    """Typed confirmation; then database, WAL, backups, key file and sync keys are gone."""
    from tests.sync_env import SyncEnv
    from tests.tls_broker import TLSBroker

    settings = node.settings
    data = Path(settings["data_dir"])
    env = SyncEnv(tmp_path / "pki", TLSBroker(tmp_path / "broker"), str(tmp_path / "hq.db"))
    env.enroll(node.node_id, data / "sync")
    NodeOutbox(node).mark_acked(scalar(node, "SELECT max(seq) FROM sync_outbox"))
    node_id = node.node_id
    node.close()
    key_copy = tmp_path / "key-inode"
    os.link(data / "node.key", key_copy)  # same inode: shows the overwrite after unlink
    original_key = key_copy.read_bytes()
    result = cli(settings, "retire", "--wipe", stdin="NWRONG\n")
    assert "confirmation did not match" in result.output and db_path(settings).exists()
    result = cli(settings, "retire", "--wipe", stdin=f"{node_id}\n")
    assert result.exit_code == 0, result.output
    assert f"node {node_id} wiped" in result.output
    assert key_copy.read_bytes() != original_key
    left = sorted(p.name for p in data.rglob("*"))
    assert left == ["backups"], left
    assert not made.path.exists()


def test_wipe_refuses_while_running(node: Node) -> None:
    """A running node is never wiped."""
    NodeOutbox(node).mark_acked(scalar(node, "SELECT coalesce(max(seq), 0) FROM sync_outbox"))
    line = one_line_error(cli(node.settings, "retire", "--wipe", "--yes"))
    assert "while the node is running" in line
    assert db_path(node.settings).exists()
