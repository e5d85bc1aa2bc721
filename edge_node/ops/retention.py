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


def run(node: Node, *, dry_run: bool = False) -> RetentionReport:
    """Purge (or preview) what `retention_days` allows; a no-op when it is 0."""
    days = node.settings["retention_days"]
    if days == 0:
        return RetentionReport(enabled=False, dry_run=dry_run, retention_days=0)
    acked = NodeOutbox(node).acked_seq()  # before the write: it only grows, so this is safe
    cut = retention.cutoff(node.now(), days, node.settings["timezone"])
    step = retention.preview if dry_run else retention.purge
    now = node.timestamp()
    counts = node.write(lambda db: step(db, cut, acked, now, node.settings))
    report = RetentionReport(True, dry_run, days, cut.day, counts)
    if not dry_run:
        log.info("retention: %d rows removed from before %s (%s)", report.removed, cut.day,
                 ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return report
