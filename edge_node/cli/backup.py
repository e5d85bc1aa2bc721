"""`edge-node backup` and `edge-node restore`: a thin click layer over edge_node/ops/backup.py."""

from __future__ import annotations

from pathlib import Path

import click

from edge_node.cli.common import settings_of, user_errors
from edge_node.node import load_keys
from edge_node.ops.backup import create_backup, rotate
from edge_node.ops.restore import record_restore, restore_backup
from edge_node.paths import backup_dir, db_path, key_path
from edge_node.store.db import StoreError
from edge_node.store.keyfile import KeyFileError


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write the backup here (e.g. a mounted USB stick) instead of the backup "
                   "directory; no rotation happens there.")
@click.pass_context
def backup(ctx: click.Context, out_dir: str | None) -> None:
    """Encrypted backup of the database, safe while the node serves.

    The copy is encrypted with the node's database key and checked before it
    is kept as node-<UTC time>-<seq>.db with a .json manifest. The key file is
    NOT in the backup: keep a copy of it apart from the backups, or no backup
    can be restored. The server also makes one daily (settings backup_hour,
    backup_keep, backup_dir).

    Example: edge-node backup --out /media/usb
    """
    settings = settings_of(ctx)
    with user_errors():
        keys = load_keys(settings)
        if not db_path(settings).exists():
            raise StoreError(f"{db_path(settings)}: no database; run `edge-node init` first")
        try:
            made = create_backup(settings, keys, Path(out_dir) if out_dir else None)
        except OSError as exc:
            raise click.ClickException(f"cannot write the backup: {exc.strerror}") from exc
        removed = [] if out_dir else rotate(backup_dir(settings), made.manifest["node_id"],
                                            settings["backup_keep"])
    click.echo(f"backup {made.path} (outbox seq {made.manifest['outbox_seq']}, "
               f"sha256 {made.manifest['sha256'][:16]}…)")
    if removed:
        click.echo(f"rotation removed {len(removed)} older backup(s)")
    click.echo(f"the key file is not in the backup: keep a copy of {key_path(settings)} "
               "somewhere else")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True,
              help="Restore even though the current database holds unsynced records made "
                   "after the backup (they are discarded).")
@click.pass_context
def restore(ctx: click.Context, file: str, force: bool) -> None:
    """Replace the database with a backup; the node must be stopped.

    Checks the manifest checksum, opens the backup with this node's key file
    and runs an integrity check before touching anything; keeps the replaced
    database as node.db.before-restore-<time>. Records made after the restore
    are sent once HQ has told the node where to continue (needs the link), so
    no seq is ever reused. Records HQ holds that the backup lacks stay at HQ.

    Example: edge-node restore /var/lib/edge-node/backups/node-20250301T023000.000Z-4711.db
    """
    settings = settings_of(ctx)
    path = Path(file)
    if not path.is_file():
        raise click.ClickException(f"{file}: no such backup file")
    with user_errors():
        try:
            keys = load_keys(settings)
        except KeyFileError as exc:
            raise click.ClickException(f"{exc} (a restore needs this node's key file, "
                                       "kept apart from the backups)") from exc
        try:
            restored = restore_backup(settings, keys, path, force)
        except OSError as exc:
            raise click.ClickException(f"restore failed: {exc.strerror}; "
                                       "the database was not replaced") from exc
        record_restore(settings, path, restored)
    click.echo(f"restored node {restored.node_id} from {path.name} "
               f"(records up to seq {restored.restored_seq})")
    if restored.kept:
        click.echo(f"previous database kept as {restored.kept}")
    if restored.discarded:
        click.echo(f"{restored.discarded} unsynced records of the previous database discarded")
    click.echo("new records are held until HQ tells the node where to continue "
               "(automatic once the link is up)")
