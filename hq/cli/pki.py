"""`edge-hq ca …`, `edge-hq node …` and `edge-hq broker-config`: the CA side of the fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from certs.authority import AuthorityError, ensure_broker_admin, init_authority, open_authority
from certs.broker import (
    ADMIN_USER,
    BrokerConfigError,
    Owner,
    add_node_commands,
    remove_node_commands,
    write_broker_dir,
)
from certs.enroll import EnrollError, fingerprint, read_json
from certs.files import write_atomic
from hq.broker_sync import BrokerNameError, active_nodes, check_broker_name, refresh_brokers
from hq.cli.common import open_store
from hq.enrollment import revoke, sign_request

DEFAULT_KEYS = "./var-hq/keys"
keys_option = click.option("--keys", "keys_dir", type=click.Path(file_okay=False),
                           envvar="EDGE_HQ_KEYS",
                           default=DEFAULT_KEYS, show_default=True,
                           help="HQ key directory (CA, signing, HPKE, TLS).")


@click.group("ca")
def ca() -> None:
    """HQ's device certificate authority."""


@ca.command("init")
@keys_option
@click.option("--broker-host", "broker_hosts", multiple=True, default=["localhost"],
              show_default=True, help="Broker DNS name(s) for its TLS certificate.")
def ca_init(keys_dir: str, broker_hosts: tuple[str, ...]) -> None:
    """Create the CA and HQ's keys (mode 0600); prints the CA fingerprint for technicians.

    Example: edge-hq ca init --keys /etc/khidmat-hq/keys --broker-host mqtt.hq.example
    """
    try:
        auth = init_authority(Path(keys_dir), list(broker_hosts))
    except AuthorityError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"CA created in {keys_dir}")
    click.echo(f"CA fingerprint (give it to technicians): {fingerprint(auth.ca_cert)}")


@click.group("node")
def node() -> None:
    """Enroll, list and revoke nodes."""


@node.command("sign")
@click.argument("request", type=click.Path(exists=True, dir_okay=False))
@click.option("--center", "center_id", required=True, help="Center the node belongs to.")
@click.option("--broker", default="localhost:8883", show_default=True,
              help="Broker HOST:PORT the node will use.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Bundle file (default enroll-<node>.bundle.json beside the request).")
@keys_option
@click.pass_context
def node_sign(ctx: click.Context, request: str, center_id: str, broker: str, out: str | None,
              keys_dir: str) -> None:
    """Sign a node's enrollment request and write its enrollment bundle.

    Example: edge-hq node sign enroll-NABCDE.json --center ISB-01 --broker mqtt.hq:8883
    """
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise click.ClickException("--broker must be HOST:PORT")
    _check_broker_name(Path(keys_dir), host, port)
    try:
        data = read_json(Path(request), "enrollment request")
        bundle = sign_request(open_authority(Path(keys_dir)), open_store(ctx.obj["db"]), data,
                              center_id, host, int(port))
    except (EnrollError, AuthorityError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    target = Path(out or Path(request).with_name(f"enroll-{bundle['node_id']}.bundle.json"))
    write_atomic(target, json.dumps(bundle, indent=2).encode())
    click.echo(f"node {bundle['node_id']} of {center_id} enrolled; bundle: {target}")
    _refresh_brokers(Path(keys_dir), ctx.obj["db"], add_node_commands(bundle["node_id"]),
                     "lets the node in now", must_apply=False)


def _check_broker_name(keys: Path, host: str, port: str) -> None:
    """Refuse a --broker host the broker certificate does not name: the node could never connect.

    The node checks the broker's certificate against the host in its bundle, as any TLS
    client does; only the broker certificate of this key directory can be checked here.
    """
    try:
        checked = check_broker_name(keys, host, port)
    except BrokerNameError as exc:
        raise click.ClickException(str(exc)) from exc
    if not checked:
        click.echo(f"warning: cannot read {keys / 'broker.pem'}; not checked that the broker "
                   f"certificate is valid for {host}", err=True)


@node.command("revoke")
@click.argument("node_id")
@keys_option
@click.pass_context
def node_revoke(ctx: click.Context, node_id: str, keys_dir: str) -> None:
    """Revoke a node: CRL updated, ingest refuses it, the fleet is told, the broker shuts it out.

    The running broker deletes the node's access at once (no restart): it disconnects
    the node and refuses everything it sends or asks for, before this command returns
    (it waits at most 10 s for the broker). The broker directories get the new CRL; from the
    broker's next reload (`systemctl reload mosquitto`) it refuses the certificate itself.

    Example: edge-hq node revoke NABCDE
    """
    try:
        serial = revoke(open_authority(Path(keys_dir)), open_store(ctx.obj["db"]), node_id)
    except (AuthorityError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {node_id} (certificate serial {serial:x})")
    _refresh_brokers(Path(keys_dir), ctx.obj["db"], remove_node_commands(node_id),
                     "has disconnected the node and refuses it from now on; "
                     "`systemctl reload mosquitto` makes it refuse the certificate too",
                     must_apply=True)


def _active_nodes(db_url: str) -> list[str]:
    """Enrolled, unrevoked node ids: the broker lets exactly these in."""
    db = open_store(db_url)
    try:
        return active_nodes(db)
    finally:
        db.close()


def _refresh_brokers(keys: Path, db_url: str, commands: list[dict[str, Any]], done: str,
                     must_apply: bool) -> None:
    """Change each running broker live and bring every broker directory up to date
    (hq/broker_sync.py), then say what happened. The enrollment or revocation at HQ has
    happened either way. A broker that could not be changed live gets the fallback (a
    restart) printed; with `must_apply` (revocation: the node may still be connected) the
    exit code is 3."""
    db = open_store(db_url)
    try:
        outcomes = refresh_brokers(keys, db, commands)
    except (BrokerConfigError, OSError) as exc:
        raise click.ClickException(f"broker files not updated: {exc}") from exc
    finally:
        db.close()
    if not outcomes:
        click.echo("no broker directory recorded; run `edge-hq broker-config` to create one")
    for outcome in outcomes:
        if outcome.where:
            click.echo(f"updated {outcome.out}; the broker at {outcome.where} {done}")
        else:
            click.echo(f"warning: the running broker of {outcome.out} was not changed: "
                       f"{outcome.error}. Its files are updated: restart the broker to apply "
                       f"them (systemctl restart mosquitto).", err=True)
    if must_apply and not all(outcome.where for outcome in outcomes):
        raise click.exceptions.Exit(3)


@click.command("broker-config")
@keys_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Where to write mosquitto.conf and every file the broker reads.")
@click.option("--port", type=click.IntRange(1, 65535), default=8883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True,  # noqa: S104
              help="Listen address.")
@click.option("--hq-port", type=click.IntRange(1, 65535), default=8884, show_default=True,
              help="HQ's own listener (`edge-hq serve --broker HOST:HQ-PORT`).")
@click.option("--hq-bind", default="127.0.0.1", show_default=True,
              help="HQ listener address; keep it off the nodes' network.")
@click.option("--run-as", default="mosquitto", show_default=True,
              help="Account mosquitto runs as: its group may read the files, it owns persist/.")
@click.pass_context
def broker_config(ctx: click.Context, keys_dir: str, out_dir: str, port: int, bind: str,
                  hq_port: int, hq_bind: str, run_as: str) -> None:
    """Write a Mosquitto config: TLS, client certificates, CRL, per-node access control.

    The broker gets its own copies of the CA and broker certificates, the broker key
    (mode 0640, group of --run-as) and the CRL, so HQ's key directory stays 0700.
    Enrollment and revocation keep the directory current; rerunning is safe.

    Example: edge-hq --db hq.db broker-config --out /etc/mosquitto/khidmat --port 8883
    """
    keys, out = Path(keys_dir).resolve(), Path(out_dir).resolve()
    if not (keys / "broker.pem").exists():
        raise click.ClickException(f"{keys}: no broker certificate; run `edge-hq ca init`")
    try:
        if ensure_broker_admin(open_authority(keys)):
            click.echo(f"issued {keys / (ADMIN_USER + '.pem')}: the broker lets it change its "
                       "access control (dynamic-security control topic) and nothing else; "
                       "`node sign` and `node revoke` use it. Keep it with the CA key.")
        write_broker_dir(keys, out, Owner.of(run_as), port, bind, _active_nodes(ctx.obj["db"]),
                         hq_port, hq_bind)
    except (AuthorityError, BrokerConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out / 'mosquitto.conf'} and the files it names "
               f"(readable by group {run_as})")
