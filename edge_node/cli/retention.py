"""`edge-node retention`: remove old citizen PII and visit detail HQ already holds."""

from __future__ import annotations

import json

import click

from edge_node.cli.common import opened_node, user_errors
from edge_node.ops.retention import RetentionReport, run


@click.group()
def retention() -> None:
    """Retention at the node (the `retention_days` setting)."""


def _lines(report: RetentionReport) -> list[str]:
    """The report for people: one line per table with something in it (counts only)."""
    if not report.enabled:
        return ["retention is off (retention_days = 0): nothing removed"]
    verb = "would remove" if report.dry_run else "removed"
    head = (f"{verb} {report.removed} rows kept more than {report.retention_days} days "
            f"(business days before {report.before_day}) and acknowledged by HQ")
    taken = report.counts.get("kpi_snapshots_taken", 0)
    return [head, *(f"  {table}: {count}" for table, count in report.counts.items()
                    if count and table != "kpi_snapshots_taken"),
            *([f"  KPI snapshots taken first: {taken}"] if taken else []),
            *(["dry run: nothing was changed"] if report.dry_run else [])]


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Remove citizen PII, visit detail and collected applications older than
    `retention_days` that HQ has acknowledged; HQ keeps its copy.

    Also runs daily inside `edge-node serve`. Prints counts, never personal data.

    Example: edge-node retention run --dry-run
    """
    with opened_node(ctx) as node, user_errors():
        report = run(node, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"enabled": report.enabled, "dry_run": report.dry_run,
                               "retention_days": report.retention_days,
                               "before_day": report.before_day, "removed": report.removed,
                               "counts": report.counts}))
        return
    for line in _lines(report):
        click.echo(line)
