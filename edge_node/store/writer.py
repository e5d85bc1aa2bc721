"""The single writer thread: every write is a function queued to it.

Concurrent requests are group-committed: the thread drains up to
`batch_max` queued functions, runs each inside its own savepoint (so one
failing request does not undo the others), then commits once. One fsync
makes the whole group durable, and only then are callers answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlite_utils import Database

T = TypeVar("T")
log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 30.0


@dataclass
class _Job:
    """One queued write function and the future that answers its caller."""

    fn: Callable[[Database], Any]
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


class Writer:
    """Owns the only writing connection of the process."""

    def __init__(self, db: Database, batch_max: int = 256) -> None:
        """Start the writer thread over `db`."""
        self.db = db
        self.batch_max = batch_max
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self.batches = 0
        self.jobs = 0
        # Called with (seconds from BEGIN to COMMIT, jobs in the group) after each commit.
        self.commit_listeners: list[Callable[[float, int], None]] = []
        self._thread.start()

    def queue_depth(self) -> int:
        """Writes queued and not yet taken by the writer thread (approximate)."""
        return self._queue.qsize()

    def submit(self, fn: Callable[[Database], T]) -> Future[T]:
        """Queue `fn(db)`; the future resolves after its transaction commits."""
        if not self._thread.is_alive():
            raise RuntimeError("the database writer has stopped")
        job = _Job(fn)
        self._queue.put(job)
        return job.future

    def write(self, fn: Callable[[Database], T], timeout: float = WRITE_TIMEOUT_S) -> T:
        """Run `fn(db)` in the writer and return its result once durable."""
        return self.submit(fn).result(timeout)

    def close(self) -> None:
        """Finish queued writes, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        """Thread body: take a group of jobs, commit it, answer the callers."""
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._drain([first])
            self._commit_group(batch)
            if stop:
                return

    def _drain(self, batch: list[_Job]) -> tuple[list[_Job], bool]:
        """Add whatever else is queued, up to batch_max; report a stop request."""
        while len(batch) < self.batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit_group(self, batch: list[_Job]) -> None:
        """Run every job in one transaction and resolve the futures after COMMIT."""
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        started = time.monotonic()
        try:
            self.db.conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                outcomes.append(self._run_job(job))
            self.db.conn.execute("COMMIT")
        except BaseException as exc:  # the group as a whole failed: nothing is durable
            log.error("write group of %d failed: %s", len(batch), type(exc).__name__)
            if self.db.conn.in_transaction:
                self.db.conn.execute("ROLLBACK")
            for job in batch:
                job.future.set_exception(exc)
            return
        self.batches += 1
        self.jobs += len(batch)
        self._tell_listeners(time.monotonic() - started, len(batch))
        for job, result, error in outcomes:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    def _tell_listeners(self, seconds: float, jobs: int) -> None:
        """Report a commit; a failing listener (metrics) never fails the writes."""
        for listener in self.commit_listeners:
            try:
                listener(seconds, jobs)
            except Exception:
                log.exception("commit listener failed")

    def _run_job(self, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        """Run one job inside a savepoint; an error that ends the transaction aborts the group."""
        try:
            with self.db.atomic():
                return job, job.fn(self.db), None
        except Exception as exc:
            if not self.db.conn.in_transaction:  # e.g. disk full: the group is lost
                raise
            return job, None, exc
