"""The running node: settings, keys, database, writer and clock wired together."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlite_utils import Database

from edge_node.config import Settings
from edge_node.ids import business_date, iso, utcnow
from edge_node.login_throttle import LoginThrottle
from edge_node.paths import db_path, fleet_key_path, key_path
from edge_node.session_cache import SessionCache
from edge_node.store import meta
from edge_node.store.checkpoint import Checkpointer
from edge_node.store.db import StoreError, open_database
from edge_node.store.keyfile import NodeKeys, load_fleet_keys, load_key_file
from edge_node.store.migrations import migrate
from edge_node.store.writer import Writer
from sync.changes import latest_hlc, register_clock
from sync.hlc import Clock

T = TypeVar("T")


def load_keys(settings: Settings) -> NodeKeys:
    """Read the key file (also needed when the DB itself is unencrypted, for PII) and the
    fleet index keys HQ sent (none before enrollment)."""
    keys = load_key_file(key_path(settings))
    return dataclasses.replace(keys, fleet=load_fleet_keys(fleet_key_path(settings)))


class Node:
    """One process's handle on the node: a writer thread plus per-thread readers."""

    def __init__(self, settings: Settings, now: Callable[[], datetime] = utcnow) -> None:
        """Open the database (migrating it) and start the writer."""
        self.settings = settings
        self.now = now
        self.keys = load_keys(settings)
        self.path = db_path(settings)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no database; run `edge-node init` first")
        self._db_keys = self.keys if settings["encrypt_db"] else None
        db = open_database(self.path, self._db_keys)
        facts = meta.read_all(db)
        self.node_id: str = facts[meta.NODE_ID_KEY]
        self.center_id: str = facts[meta.CENTER_ID_KEY]
        self.clock = Clock(self.node_id)
        register_clock(db.conn, self.clock)
        migrate(db)
        newest = latest_hlc(db.conn)
        if newest:
            self.clock.observe(newest)
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer does it off-path
        self.checkpointer = Checkpointer(lambda: open_database(self.path, self._db_keys))
        self.writer = Writer(db, settings["writer_batch_max"])
        self._local = threading.local()
        self._readers: list[tuple[threading.Thread, Database]] = []
        self._lock = threading.Lock()
        self.sessions = SessionCache()
        self.login_throttle = LoginThrottle()

    def write(self, fn: Callable[[Database], T]) -> T:
        """Run `fn(db)` in the single writer; returns once the change is durable."""
        return self.writer.write(fn)

    def reader(self) -> Database:
        """This thread's read-only connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = open_database(self.path, self._db_keys)
            db.execute("PRAGMA query_only = ON")
            self._local.db = db
            with self._lock:
                self._close_orphans_locked()
                self._readers.append((threading.current_thread(), db))
        return db

    def _close_orphans_locked(self) -> None:
        """Close the readers of threads that ended: paho starts a network thread per MQTT
        connection, so a flapping link would otherwise leak one connection per reconnect."""
        alive = []
        for thread, db in self._readers:
            if thread.is_alive():
                alive.append((thread, db))
            else:
                db.close()
        self._readers = alive

    def open_readers(self) -> int:
        """How many read connections are open (threads that ended are pruned lazily)."""
        with self._lock:
            return len(self._readers)

    def timestamp(self) -> str:
        """Current time in storage form."""
        return iso(self.now())

    def today(self) -> str:
        """The center's business day."""
        return business_date(self.now(), self.settings["timezone"])

    def close(self) -> None:
        """Finish pending writes and close every connection."""
        self.writer.close()
        self.writer.db.close()
        self.checkpointer.close()
        with self._lock:
            for _, db in self._readers:
                db.close()
            self._readers.clear()


def secure_data_dir(path: Path) -> None:
    """Create the data directory readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
