"""WAL checkpoints off the request path.

With SQLite's automatic checkpoint, every ~1000 pages one unlucky commit
copies the WAL into the database (and fsyncs it) before its caller hears
back. The writer turns that off and this thread checkpoints passively on its
own connection instead. Durability is unchanged: a commit is durable once its
WAL frames are fsynced, before and after this change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlite_utils import Database

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_S = 1.0


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` every CHECKPOINT_EVERY_S seconds."""

    def __init__(self, open_db: Callable[[], Database]) -> None:
        """Start the thread with its own connection."""
        self._db = open_db()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Checkpoint until stopped; a failure is logged and retried next time."""
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            try:
                self._db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except Exception as exc:  # busy or I/O: the next round tries again
                log.warning("WAL checkpoint failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Stop, then fold the whole WAL into the database (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._db.close()
