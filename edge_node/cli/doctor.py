"""`edge-node doctor`: the checks of `edge_node.ops.doctor`, one line each."""

from __future__ import annotations

import json

import click

from edge_node.cli.common import settings_of
from edge_node.ops.doctor import EXIT_CODES, report, run_checks, worst


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the node: database, key, disk, clock, certificate, broker, backlog, backups.

    One line per check, `PASS|WARN|FAIL|SKIP check: finding — fix: what to try`.
    Exit code: 0 all passed, 1 a warning, 2 a failure. Read-only, safe beside
    a running node.

    Example: edge-node --data-dir /var/lib/edge-node doctor --json
    """
    results = run_checks(settings_of(ctx))
    if as_json:
        click.echo(json.dumps(report(results), indent=2))
    else:
        for result in results:
            click.echo(result.line())
    ctx.exit(EXIT_CODES[worst(results)])

