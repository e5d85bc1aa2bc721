"""`edge-hq`: HQ ingest workers, fleet view, quarantine, downstream publishing.

Every option can also come from the environment as EDGE_HQ_<OPTION>
(e.g. EDGE_HQ_DB=postgresql://…).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from hq import decisions as hq_decisions
from hq.bundles import import_bundle
from hq.chain import verify_chain
from hq.cli.api_token import api_token
from hq.cli.citizens import citizen, fleet_key, pii_key
from hq.cli.common import open_store, print_rows
from hq.cli.console import account, console
from hq.cli.decisions import decisions_cmd
from hq.cli.pki import broker_config, ca, node
from hq.downstream import enqueue
from hq.fleet import conflict_rows, fleet, quarantine_rows
from hq.metrics import DEFAULT_METRICS_HOST, HQMetrics
from hq.pii import ENV_KEY_FILE
from hq.projections import PROJECTIONS, rebuild
from hq.refusals import refused_rows
from hq.resume import restores_in_chain
from hq.store import StoreError
from hq.worker import Worker
from sync.bundle import BundleError
from sync.identity import IdentityError, load_hq_identity

DEFAULT_DB = "./var-hq/hq.db"
DEFAULT_KEYS = "./var-hq/keys"
BROKER_WAIT_S = 3.0  # no worker connected after this long: say the broker is awaited
LINK_POLL_S = 0.2


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "auto_envvar_prefix": "EDGE_HQ"})
@click.option("--db", "db_url", default=DEFAULT_DB, show_default=True, envvar="EDGE_HQ_DB",
              help="HQ store: a SQLite path or postgresql://…")
@click.option("--pii-key", "pii_key", type=click.Path(dir_okay=False), default=None,
              envvar="EDGE_HQ_PII_KEY",
              help="HQ's PII field key file (0600; made on first use). Needed for a "
                   "PostgreSQL store; a SQLite store keeps <db>.pii.key beside it.")
@click.pass_context
def main(ctx: click.Context, db_url: str, pii_key: str | None) -> None:
    """Khidmat Edge headquarters: receive every record once, watch the fleet.

    Example: edge-hq --db postgresql://hq@db/hq --pii-key /etc/edge-hq/pii.key serve
    """
    if pii_key:  # every store this process opens (workers too) finds it there
        os.environ[ENV_KEY_FILE] = pii_key
    ctx.obj = {"db": db_url}


@main.command()
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False), default=DEFAULT_KEYS,
              envvar="EDGE_HQ_KEYS",
              show_default=True, help="HQ key directory (signing, HPKE, TLS client).")
@click.option("--broker", default="localhost:8883", show_default=True, help="HOST:PORT.")
@click.option("--workers", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Ingest workers in this process (each its own connection).")
@click.option("--worker-id", default="hq", show_default=True, help="Client id prefix.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              envvar="EDGE_HQ_METRICS_PORT", help="Serve Prometheus /metrics here (0: off).")
@click.option("--metrics-host", default=DEFAULT_METRICS_HOST, show_default=True,
              envvar="EDGE_HQ_METRICS_HOST", help="Address of the /metrics server.")
@click.pass_context
def serve(ctx: click.Context, keys_dir: str, broker: str, workers: int, worker_id: str,
          metrics_port: int, metrics_host: str) -> None:
    """Run ingest workers on the shared subscription until SIGTERM.

    Example: edge-hq serve --broker localhost:8883 --workers 2 --metrics-port 9108
    """
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = broker.rpartition(":")
    try:
        identity = load_hq_identity(Path(keys_dir))
        metrics = HQMetrics(ctx.obj["db"] if metrics_port else None)
        pool = [Worker(ctx.obj["db"], identity, host or "localhost", int(port),
                       f"{worker_id}-{i + 1}", metrics) for i in range(workers)]
        if metrics_port:
            metrics.serve(metrics_port, metrics_host)
    except (IdentityError, ValueError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if any(w.db.pii_keys is None for w in pool):  # citizens' data could not be stored
        raise click.ClickException("no PII field key for this store: give --pii-key FILE "
                                   "(EDGE_HQ_PII_KEY)")
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    for worker in pool:
        worker.start()
    click.echo(f"connecting {workers} ingest worker(s) to {broker}", err=True)
    watch_links([functools.partial(_link_up, worker) for worker in pool], broker, stop,
                lambda line: click.echo(line, err=True))
    for worker in pool:
        worker.stop()
    metrics.close()


def _link_up(worker: Any) -> bool:
    """True while the worker's MQTT session is up."""
    return bool(worker.link.connected)


def watch_links(connected: list[Callable[[], bool]], broker: str, stop: threading.Event,
                echo: Callable[[str], None], wait_s: float = BROKER_WAIT_S) -> None:
    """Say how many workers hold a live session whenever that changes, until `stop` is set.

    Nothing claims a connection before the broker accepted it; a broker that stays away for
    `wait_s` is named, once, while the workers keep retrying with backoff.
    """
    total, shown, started, waiting_told = len(connected), 0, time.monotonic(), False
    while not stop.is_set():
        up = sum(is_up() for is_up in connected)
        if up != shown:
            if up == total:
                echo(f"{total} ingest worker(s) connected to {broker}")
            elif up:
                echo(f"{up} of {total} ingest workers connected to {broker}; "
                     "the others are retrying")
            else:
                echo(f"lost the broker at {broker}; retrying")
            shown = up
        elif not up and not waiting_told and time.monotonic() - started >= wait_s:
            echo(f"waiting for the broker at {broker}: not reachable yet, retrying "
                 "(no ingest worker connected)")
            waiting_told = True
        stop.wait(LINK_POLL_S)


@main.command("fleet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def fleet_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every node: state, last seen, backlog, version, clock skew, cert expiry, chain,
    downstream items pending and refused (see `edge-hq refused`).

    Example: edge-hq fleet --json
    """
    print_rows(fleet(open_store(ctx.obj["db"])), as_json)


@main.command("quarantine")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.pass_context
def quarantine_cmd(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Rejected envelopes with the reason (newest first).

    Example: edge-hq quarantine --limit 20
    """
    print_rows(quarantine_rows(open_store(ctx.obj["db"]), limit), as_json)


@main.command("refused")
@click.option("--node", "node_id", default=None, help="Only this node (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.pass_context
def refused_cmd(ctx: click.Context, node_id: str | None, as_json: bool, limit: int) -> None:
    """Downstream items a node refused, with its reason (newest report first).

    Each row names the node, the item's seq and kind, what it was about (catalog
    version, decision reference, staff account ids), the node's reason code and
    text. A refused item changed nothing at the node; publish a corrected one.

    Example: edge-hq refused --node NABCDE
    """
    print_rows(refused_rows(open_store(ctx.obj["db"]), node_id, limit), as_json)


@main.command("conflicts")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def conflicts_cmd(ctx: click.Context, as_json: bool) -> None:
    """Concurrent citizen edits that were overwritten, for review.

    Example: edge-hq conflicts
    """
    print_rows(conflict_rows(open_store(ctx.obj["db"])), as_json)


@main.command("chain")
@click.argument("node_id")
@click.pass_context
def chain_cmd(ctx: click.Context, node_id: str) -> None:
    """Verify a node's audit chain as received; exit 1 on gaps, forks or edits.

    Restores from backup are listed: the chain continues after HQ's entries.

    Example: edge-hq chain NABCDE
    """
    db = open_store(ctx.obj["db"])
    problems = verify_chain(db, node_id)
    for line in restores_in_chain(db, node_id):
        click.echo(line)
    for line in problems:
        click.echo(f"FAIL {line}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: audit chain of {node_id} intact")


@main.command("rebuild-projections")
@click.option("--table", "tables", multiple=True, metavar="TABLE",
              help="Only this node table (repeatable; default: every projection).")
@click.pass_context
def rebuild_projections_cmd(ctx: click.Context, tables: tuple[str, ...]) -> None:
    """Recreate the typed HQ tables (hq_citizens, hq_tickets, …) from the merge state.

    Runs in one transaction: ingest waits meanwhile, readers see the old rows
    until it commits. The result equals what ingest keeps record by record, so
    run it after restoring the store or when a projection is suspect. Prints
    progress per table.

    Example: edge-hq rebuild-projections --table applications
    """
    unknown = sorted(set(tables) - set(PROJECTIONS))
    if unknown:
        raise click.ClickException(f"no projection of {', '.join(unknown)}; choose from "
                                   f"{', '.join(sorted(PROJECTIONS))}")
    shown: dict[str, float] = {}

    def progress(table: str, done: int, total: int) -> None:
        """One line when a table starts, every few seconds, and when it is done."""
        now = time.monotonic()
        if done in (0, total) or now - shown.get(table, 0.0) >= 2.0:
            click.echo(f"{table}: {done}/{total}", err=True)
            shown[table] = now

    db = open_store(ctx.obj["db"])
    try:
        with db.transaction() as tx:
            counts = rebuild(tx, list(tables) or None, progress)
    finally:
        db.close()
    click.echo(f"rebuilt {len(counts)} projection(s), {sum(counts.values())} row(s)")


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False), default=DEFAULT_KEYS,
              envvar="EDGE_HQ_KEYS",
              show_default=True, help="HQ key directory (signing, HPKE).")
@click.option("--ack-out", type=click.Path(file_okay=False), default=None,
              help="Write each node's ack bundle here (e.g. the USB stick).")
@click.pass_context
def import_cmd(ctx: click.Context, file: str, keys_dir: str, ack_out: str | None) -> None:
    """Apply a bundle file carried from a node (USB), with the same checks as MQTT.

    Bad envelopes are quarantined and the good ones still apply; a corrupt or
    truncated file is refused before anything is applied. Importing the same
    bundle again applies nothing new. Exit 1 if anything was quarantined.

    Example: edge-hq import /media/usb/NABCDE-up-1-3600.keb --ack-out /media/usb
    """
    try:
        identity = load_hq_identity(Path(keys_dir))
    except (IdentityError, ValueError) as exc:
        raise click.ClickException(f"HQ keys unusable: {exc}") from exc
    db = open_store(ctx.obj["db"])
    try:
        report = import_bundle(db, identity, Path(file), Path(ack_out) if ack_out else None)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write the ack bundle: {exc.strerror}") from exc
    finally:
        db.close()
    click.echo(f"{Path(file).name}: {report.envelopes} envelope(s), {report.accepted} "
               f"accepted ({report.applied_records} new records applied), "
               f"{report.quarantined_total} quarantined")
    for result in report.nodes.values():
        line = f"node {result.node_id}: acked up to seq {result.acked_seq}"
        if result.ack_file is not None:
            line += f"; ack bundle {result.ack_file}"
        click.echo(line + (f" ({result.note})" if result.note else ""))
    if report.quarantined_total:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.quarantined.items()))
        raise click.ClickException(f"{report.quarantined_total} envelope(s) quarantined "
                                   f"({reasons}); see `edge-hq quarantine`")


@main.group()
def publish() -> None:
    """Queue records for nodes (sent down signed, encrypted, acknowledged)."""


def _enqueue(ctx: click.Context, kind: str, payload: Any, node: str | None) -> None:
    """Queue and report."""
    try:
        count = enqueue(open_store(ctx.obj["db"]), kind, payload, node)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"queued {kind} for {count} node(s)")


def _json_file(path: str) -> Any:
    """Parse a JSON file or fail with one line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: not a readable JSON file") from exc


@publish.command("catalog")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def publish_catalog(ctx: click.Context, file: str) -> None:
    """Send a catalog version to every node (nodes keep the newest valid one).

    Example: edge-hq publish catalog catalog-v2.json
    """
    data = _json_file(file)
    if not isinstance(data, dict) or not isinstance(data.get("catalog_version"), int):
        raise click.ClickException(f"{file}: needs an integer catalog_version")
    _enqueue(ctx, "catalog", data, None)


@publish.command("staff")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--node", default=None, help="Only this node (default: all).")
@click.pass_context
def publish_staff(ctx: click.Context, file: str, node: str | None) -> None:
    """Send staff accounts (password hashes only, never passwords).

    Example: edge-hq publish staff staff.json --node NABCDE
    """
    data = _json_file(file)
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
        raise click.ClickException(f"{file}: needs an accounts list")
    _enqueue(ctx, "staff", data, node)


@publish.command("decision")
@click.argument("reference")
@click.argument("status", type=click.Choice(["ready", "rejected"]))
@click.option("--reason", default=None,
              help="Why (required for rejected); shown and printed at the center.")
@click.option("--node", default=None,
              help="Deprecated: HQ routes to the node holding the application; if given, "
                   "it must be that node.")
@click.pass_context
def publish_decision(ctx: click.Context, reference: str, status: str, reason: str | None,
                     node: str | None) -> None:
    """Send the agency back office's decision on an application to the node holding it.

    The back office sets ready and rejected (with a reason); the center sets the
    other statuses. HQ refuses, sending nothing, a decision it can see is
    impossible: unknown reference, wrong --node, a rejection without a reason, or
    a move the status lattice forbids. Follow it with `edge-hq decisions`.

    Example: edge-hq publish decision ISB-01-NABCDE-20261128-00001 rejected
    --reason "Fee challan not paid"
    """

    try:
        queued = hq_decisions.publish(open_store(ctx.obj["db"]), reference, status, reason,
                                      node)
    except hq_decisions.DecisionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"queued decision {reference} -> {status} for node {queued.node_id} "
               f"(seq {queued.seq}); see `edge-hq decisions`")


for command in (ca, node, broker_config, citizen, fleet_key, pii_key, decisions_cmd, console,
                account, api_token):
    main.add_command(command)
