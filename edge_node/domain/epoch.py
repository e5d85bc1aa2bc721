"""Restore epochs: numbers a restored node issues can never repeat ones it issued before.

A node restored from a backup has its counters back at the backup's values:
the daily ticket numbers and application references it issued after the
backup (and HQ may hold) would be issued again, even while the node is
offline and cannot ask HQ. `edge-node restore` therefore starts a new
*restore epoch* (1, 2, …, one more than the backup's and the replaced
database's) and records the business day of the restore. For every business
day up to and including that day — the only days the lost database can have
numbered — tickets and references carry the epoch and count in their own
sequence:

    ticket     A-017            → A-R1-017        (daily_number 100017)
    reference  ISB-01-N…-20260114-00017 → ISB-01-N…-20260114-R1-00017

Later days use the plain form again (nothing was issued for them). The
epoch lives in node_meta, so a backup carries it and a restore of that
backup moves past it.
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from edge_node.store import meta

EPOCH_SPAN = 100_000  # daily_number of an epoch ticket: epoch * EPOCH_SPAN + n


def current(db: Database) -> tuple[int, str | None]:
    """(epoch, business day of the restore) — (0, None) on a never-restored node."""
    raw = meta.get(db, meta.EPOCH_KEY)
    if raw is None:
        return 0, None
    value = json.loads(raw)
    return int(value["epoch"]), str(value["day"])


def begin(db: Database, day: str, at_least: int = 0) -> int:
    """Start the next epoch (above the current one and `at_least`) on `day`; returns it."""
    epoch = max(current(db)[0], at_least) + 1
    meta.put(db, meta.EPOCH_KEY, json.dumps({"epoch": epoch, "day": day}))
    return epoch


def for_day(db: Database, day: str) -> int:
    """The epoch that numbers issued for business `day` carry (0: plain numbers)."""
    epoch, restored_on = current(db)
    return epoch if restored_on is not None and day <= restored_on else 0


def counter_key(key: str, epoch: int) -> str:
    """The counter row of `key` in an epoch (its own sequence, starting at 1)."""
    return f"{key}#R{epoch}" if epoch else key


def ticket_number(prefix: str, daily_number: int) -> str:
    """`A-017`, or `A-R1-017` for an epoch ticket."""
    epoch, n = divmod(daily_number, EPOCH_SPAN)
    return f"{prefix}-R{epoch}-{n:03d}" if epoch else f"{prefix}-{n:03d}"
