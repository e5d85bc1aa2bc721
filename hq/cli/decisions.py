"""`edge-hq decisions`: back-office decisions and what the nodes' acks say became of them."""

from __future__ import annotations

import click

from hq.cli.common import open_store, print_rows
from hq.decisions import rows


@click.command("decisions")
@click.option("--refused", "refused_only", is_flag=True,
              help="Only decisions a node refused, with its reason.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.pass_context
def decisions_cmd(ctx: click.Context, refused_only: bool, as_json: bool, limit: int) -> None:
    """Back-office decisions sent to nodes and what became of each (newest first).

    state is what the node's acknowledgements say: pending (queued or sent, not
    yet acknowledged), applied (acknowledged and applied), refused (the node
    did not apply it; refusal and refusal_detail give its reason). A refused
    decision changed nothing at the center.

    Example: edge-hq decisions --refused
    """

    print_rows(rows(open_store(ctx.obj["db"]), refused_only, limit), as_json)
