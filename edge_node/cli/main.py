"""`edge-node`: a thin click layer over the node's Python API.

User errors are one clear line (click.ClickException) with no traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edge_node import __version__
from edge_node.bootstrap import InitError, init_node, load_demo
from edge_node.cli.backup import backup, restore
from edge_node.cli.common import opened_node, settings_of, user_errors
from edge_node.cli.doctor import doctor
from edge_node.cli.enroll import enroll
from edge_node.cli.install import install_systemd
from edge_node.cli.retention import retention
from edge_node.cli.retire import retire
from edge_node.config import SETTINGS
from edge_node.domain import audit as audit_domain
from edge_node.domain.staff import create_staff
from edge_node.node import Node
from edge_node.paths import is_enrolled, sync_dir
from edge_node.replication.port import NodeOutbox, export_bundle
from edge_node.replication.runtime import SyncLock, start_agent
from edge_node.replication.status import LIVE_FIELDS
from edge_node.replication.status import sync_status as read_sync_status
from edge_node.service.serve import run_server
from sync.bundle import BundleError, import_ack_bundle
from sync.identity import IdentityError, load_node_identity

if TYPE_CHECKING:
    from sync.identity import NodeIdentity

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-node")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory (default ./var, or EDGE_NODE_DATA_DIR).")
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="TOML settings file (default <data-dir>/edge-node.toml).")
def main(data_dir: str | None, config: str | None) -> None:
    """Khidmat Edge node: the offline service desk of one center.

    Example: edge-node --data-dir /var/lib/edge-node init --center-id ISB-01
    """


@main.command()
@click.option("--center-id", required=True, help="Center identifier, e.g. ISB-01.")
@click.option("--demo", is_flag=True, help="Also create demo staff and counters.")
@click.pass_context
def init(ctx: click.Context, center_id: str, demo: bool) -> None:
    """Create the database, node id, key file and seed catalog.

    Example: edge-node init --center-id ISB-01 --demo
    """
    settings = settings_of(ctx)
    with user_errors():
        try:
            info = init_node(settings, center_id)
        except InitError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"node {info['node_id']} of center {info['center_id']} created")
    click.echo(f"database: {info['database']} (encrypted: {info['encrypted']})")
    click.echo(f"key file: {info['key_file']} (mode 0600; back it up separately)")
    if demo:
        with opened_node(ctx) as node:
            accounts = load_demo(node)
        click.echo("demo accounts (change before real use):")
        for user, password in accounts:
            click.echo(f"  {user:<11} {password}")


@main.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Show every setting: value, default and help.

    Example: EDGE_NODE_PORT=9000 edge-node config show
    """
    values: Mapping[str, object] = settings_of(ctx)
    rows = [{"name": s.name, "value": values[s.name], "default": s.default, "help": s.help}
            for s in SETTINGS]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "" if row["value"] == row["default"] else "  (changed)"
        click.echo(f"{row['name']} = {row['value']!r}{mark}\n    {row['help']}")


@main.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the API under waitress with the scheduler; stops cleanly on SIGTERM.

    Example: edge-node serve --host 0.0.0.0 --port 8080
    """
    settings = settings_of(ctx, host=host, port=port)
    with user_errors():
        run_server(settings)


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Check the audit chain; exit 1 if an entry was edited or deleted.

    Example: edge-node audit verify
    """
    with opened_node(ctx) as node:
        db = node.reader()
        problems = audit_domain.verify(db)
        count = db.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    if problems:
        for line in problems:
            click.echo(f"FAIL {line}", err=True)
        sys.exit(1)
    click.echo(f"ok: {count} audit entries, chain intact")


@main.group()
def sync() -> None:
    """Replication to HQ: status, push now, USB bundles."""


@sync.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sync_status(ctx: click.Context, as_json: bool) -> None:
    """Backlog, oldest unsent record, bytes pending, last ack and link state.

    Example: edge-node sync status
    """
    with opened_node(ctx) as node:
        status = read_sync_status(node)  # a running server's agent is in another process
    if as_json:
        shown = {k: v for k, v in status.as_dict().items() if k not in LIVE_FIELDS}
        click.echo(json.dumps(shown, indent=2))
        return
    age = status.oldest_age_s
    click.echo(f"enrolled:        {'yes' if status.enrolled else 'no'}")
    click.echo(f"link:            {status.link}"
               + (f" since {status.link_since}" if status.link_since else ""))
    click.echo(f"backlog:         {status.count} records, {status.bytes_pending} bytes")
    click.echo(f"oldest unsent:   {'-' if age is None else f'{age:.0f} s ago'}")
    click.echo(f"last ack:        seq {status.acked_seq} at {status.last_ack_at or '-'}")


@sync.command("push")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Give up after this many seconds.")
@click.pass_context
def sync_push(ctx: click.Context, timeout: float) -> None:
    """Sync now and show progress until the backlog is empty.

    If `edge-node serve` is running it is already syncing: this command then
    only watches its progress. Exit 1 when the backlog is not empty in time.

    Example: edge-node sync push --timeout 300
    """
    with opened_node(ctx) as node:
        if not is_enrolled(node.settings):
            raise click.ClickException("node is not enrolled: run `edge-node enroll` first")
        port, lock = NodeOutbox(node), SyncLock(node.settings)
        agent = start_agent(node, lock)
        if agent is None:
            click.echo("the running server is syncing; watching its progress")
        try:
            done = _watch_backlog(port, timeout)
        finally:
            if agent is not None:
                agent.stop()
            lock.release()
    if not done:
        raise click.ClickException(f"backlog not empty after {timeout:.0f} s; "
                                   "check `edge-node sync status` and the link")
    click.echo("in sync: nothing left to send")


def _watch_backlog(port: Any, timeout: float) -> bool:
    """Progress bar over the backlog until it is empty or `timeout` passes."""
    start = port.stats()["count"]
    deadline = time.monotonic() + timeout
    with click.progressbar(length=max(start, 1), label="sending") as bar:
        sent = 0
        while time.monotonic() < deadline:
            left = port.stats()["count"]
            bar.update(max(0, start - left - sent))
            sent = max(sent, start - left)
            if left == 0:
                return True
            time.sleep(0.5)
    return False


def _node_identity(node: Node) -> NodeIdentity:
    """The node's sync keys, or a one-line error when it is not enrolled."""
    if not is_enrolled(node.settings):
        raise click.ClickException("node is not enrolled: run `edge-node enroll` first")
    try:
        return load_node_identity(sync_dir(node.settings), node.node_id)
    except (IdentityError, ValueError) as exc:
        raise click.ClickException(f"sync keys unusable: {exc}") from exc


class _LazyBar:
    """A progress bar drawn from the first exported batch on, so a refusal comes alone."""

    def __init__(self, length: int, label: str) -> None:
        """Nothing is drawn yet."""
        self.bar = click.progressbar(length=max(length, 1), label=label)
        self.started = False

    def update(self, steps: int) -> None:
        """Draw the bar if needed and advance it."""
        if not self.started:
            self.bar.__enter__()
            self.started = True
        self.bar.update(steps)

    def close(self) -> None:
        """Finish the bar if it was drawn."""
        if self.started:
            self.bar.__exit__(None, None, None)


@sync.command("export")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the bundle to (e.g. the mounted USB stick).")
@click.pass_context
def sync_export(ctx: click.Context, out_dir: str) -> None:
    """Write everything HQ has not acknowledged yet to one bundle file.

    Carry it to HQ (`edge-hq import`), bring back the ack bundle and apply it
    with `edge-node sync import-ack`. Records leave the outbox only then.

    Example: edge-node sync export --out /media/usb
    """
    with opened_node(ctx) as node:
        bar = _LazyBar(read_sync_status(node).count, "exporting")
        try:
            report = export_bundle(node, Path(out_dir), bar.update)
        except BundleError as exc:
            raise click.ClickException(str(exc)) from exc
        except (IdentityError, ValueError) as exc:
            raise click.ClickException(f"sync keys unusable: {exc}") from exc
        except OSError as exc:
            raise click.ClickException(f"{out_dir}: cannot write the bundle "
                                       f"({exc.strerror})") from exc
        finally:
            bar.close()
    if report.first_seq is None:
        click.echo(f"nothing unsent; {report.path} carries only the downstream ack")
        return
    click.echo(f"wrote {report.path}: seq {report.first_seq}..{report.last_seq}, "
               f"{report.records} records")
    if not report.complete:
        click.echo("the backlog is larger than one bundle: import this bundle's ack, "
                   "then export again for the rest", err=True)


@sync.command("import-ack")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def sync_import_ack(ctx: click.Context, file: str) -> None:
    """Apply HQ's ack bundle: drop acknowledged records, apply HQ's updates.

    The bundle must be signed by HQ and addressed to this node; otherwise
    nothing is applied. An update this node refuses (e.g. a broken catalog)
    changes nothing; it is listed, and the next export tells HQ why.

    Example: edge-node sync import-ack /media/usb/NABCDE-ack-3600.keb
    """
    with opened_node(ctx) as node:
        identity = _node_identity(node)
        port = NodeOutbox(node)
        down_before = port.down_seq()
        try:
            report = import_ack_bundle(port, identity, Path(file))
        except BundleError as exc:
            raise click.ClickException(str(exc)) from exc
        backlog = port.stats()["count"]
        refused = [r for r in port.refused_down() if r["seq"] > down_before]
    verb = "advanced to" if report.advanced else "already at"
    click.echo(f"ack {verb} seq {report.acked_seq}; {report.down_applied - len(refused)} "
               f"update(s) from HQ applied; {backlog} record(s) still unsent")
    for item in refused:
        click.echo(f"refused update {item['seq']} from HQ ({item['reason']}: {item['detail']}); "
                   "the next export tells HQ", err=True)


@main.group()
def staff() -> None:
    """Local staff accounts (normally they come from HQ)."""


@staff.command("add")
@click.argument("username")
@click.option("--name", "full_name", required=True, help="Full name shown in the UI.")
@click.option("--role", required=True, help="receptionist, operator, supervisor, manager, ...")
@click.password_option(help="Password (prompted when not given; at least 10 characters).")
@click.pass_context
def staff_add(ctx: click.Context, username: str, full_name: str, role: str,
              password: str) -> None:
    """Create a staff account on this node.

    Example: edge-node staff add amina --name "Amina Khan" --role supervisor
    """
    with opened_node(ctx) as node, user_errors():
        now = node.timestamp()

        def run(db: Any) -> dict[str, Any]:
            row = create_staff(db, username, full_name, role, password, now)
            audit_domain.append(db, None, "staff.create", "staff", row["id"], now,
                                {"role": role})
            return row

        row = node.write(run)
    click.echo(f"created {row['role']} account {row['username']}")


for command in (enroll, backup, restore, retire, retention, install_systemd, doctor):
    main.add_command(command)
