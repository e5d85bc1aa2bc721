"""Run the retention purge on an opened node: the daily job and `edge-node retention run`.

The rule and the purge are in `edge_node/domain/retention.py`; this reads the
setting and HQ's acknowledged seq and runs it in the writer (or, for a dry run,
runs and rolls it back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edge_node.domain import retention
from edge_node.node import Node
from edge_node.replication.port import NodeOutbox

log = logging.getLogger(__name__)
BATCH_VISITS = 2000  # ~18,000 rows, well under a second of the writer's time


@dataclass(frozen=True)
class RetentionReport:
    """What a run removed (or would remove): counts per table, never PII."""

    enabled: bool
    dry_run: bool
    retention_days: int
    before_day: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def removed(self) -> int:
        """Rows removed (or that would be) over every table."""
        return sum(self.counts.get(table, 0) for table in retention.COUNTED)


def _purge_in_batches(node: Node, cut: retention.Cutoff, acked: int, now: str
                      ) -> dict[str, int]:
    """Purge BATCH_VISITS old visits per transaction, so the writer is never held long
    (a node's first purge may face months of visits); counts summed over the batches.

    Another batch follows only a full one; a batch slowed by unacknowledged visits ends
    the run, and the next day's run goes on.
    """
    total: dict[str, int] = {}
    while True:
        counts = node.write(lambda db: retention.purge(db, cut, acked, now, node.settings,
                                                       BATCH_VISITS))
        for table, count in counts.items():
            total[table] = total.get(table, 0) + count
        if counts["visits"] < BATCH_VISITS:
            return total


def run(node: Node, *, dry_run: bool = False) -> RetentionReport:
    """Purge (or preview) what `retention_days` allows; a no-op when it is 0."""
    days = node.settings["retention_days"]
    if days == 0:
        return RetentionReport(enabled=False, dry_run=dry_run, retention_days=0)
    acked = NodeOutbox(node).acked_seq()  # before the write: it only grows, so this is safe
    cut = retention.cutoff(node.now(), days, node.settings["timezone"])
    now = node.timestamp()
    if dry_run:
        counts = node.write(lambda db: retention.preview(db, cut, acked, now, node.settings))
    else:
        counts = _purge_in_batches(node, cut, acked, now)
    report = RetentionReport(True, dry_run, days, cut.day, counts)
    if not dry_run:
        log.info("retention: %d rows removed from before %s (%s)", report.removed, cut.day,
                 ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return report
