"""`edge-node retire [--wipe]`: a thin click layer over edge_node/ops/retire.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from edge_node.cli.common import settings_of, user_errors
from edge_node.node import load_keys
from edge_node.ops.restore import hold_stopped_node
from edge_node.ops.retire import readiness
from edge_node.ops.retire import wipe as wipe_node
from edge_node.store.db import StoreError

if TYPE_CHECKING:
    from edge_node.ops.retire import Readiness

WAY_OUT = ("sync them (`edge-node sync push`) or export them (`edge-node sync export --out "
           "DIR`) and take the bundle to HQ, then retire again")


@click.command()
@click.option("--wipe", is_flag=True,
              help="Erase the database, WAL, backups, key file and sync keys.")
@click.option("--yes", is_flag=True, help="Skip the typed confirmation (for scripts).")
@click.option("--force", is_flag=True,
              help="Wipe even though records are neither synced nor exported (they are lost).")
@click.pass_context
def retire(ctx: click.Context, wipe: bool, yes: bool, force: bool) -> None:
    """Check a node can be retired; with --wipe, erase its data and keys.

    Refuses while the node holds records HQ has not acknowledged and that were
    not exported to a bundle. --wipe overwrites the key files before removing
    them, so the database and its backups become unreadable; the node must be
    stopped. Move a node instead with backup, key file copy and restore.

    Example: edge-node retire --wipe
    """
    settings = settings_of(ctx)
    with user_errors():
        lock = hold_stopped_node(settings, "retire") if wipe else None
        try:
            try:
                state = readiness(settings, load_keys(settings))
            except StoreError as exc:
                if not (wipe and force):
                    raise StoreError(f"{exc.args[0]}; cannot check for unsynced records "
                                     "(use --wipe --force to erase anyway)") from exc
                state = None
            node_id = state.node_id if state else None
            if state and not state.ready and not force:
                raise click.ClickException(
                    f"node {state.node_id} holds {state.stranded} unsynced records (seq up to "
                    f"{state.last_seq}) that are not exported; {WAY_OUT}")
            if not wipe:
                _report_ready(state)
                return
            _confirm(node_id, yes)
            removed = wipe_node(settings, node_id)
        finally:
            if lock:
                lock.release()
    click.echo(f"node {node_id or '(unknown)'} wiped: {len(removed)} files removed, "
               "key files overwritten first")


def _report_ready(state: Readiness | None) -> None:
    """What `retire` without --wipe says about a node that may go."""
    if state is None:
        return
    extra = f" ({state.unsynced} unsynced records are in an export bundle)" \
        if state.unsynced else ""
    click.echo(f"node {state.node_id} can be retired{extra}; "
               "`edge-node retire --wipe` erases its database, backups and keys")


def _confirm(node_id: str | None, yes: bool) -> None:
    """Typed confirmation: the node id (or 'wipe' when it is unknown)."""
    if yes:
        return
    word = node_id or "wipe"
    typed = click.prompt(f"this erases the node's data and keys for good; type {word} "
                         "to confirm", default="", show_default=False)
    if typed.strip() != word:
        raise click.ClickException("confirmation did not match; nothing was removed")
